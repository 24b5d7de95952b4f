"""Every name ostr-ray writes to (and reads from) MLflow, in one place, with the value formatting MLflow needs.

Run tree of a launch (written by :class:`~ostr_ray.tracking.recorder.LaunchRecorder`)::

    experiment  <launch name>            (artifacts under <launch dir>/mlartifacts for a local store)
    └── parent run  <launch name>        params: the resolved LaunchSpec + every variant's config
        │   metrics per epoch: agreement, consensus_stable_for, mean_kendall_tau, n_seeds, agreement_<criterion>
        │   tags: versions, git commit, ostr.launch_path, consensus_genotype, agreement, ostr.stop_reason
        │   artifacts: report.json, plots/agreement_<variant>.png, plots/seeds_<variant>.png, evidence/
        ├── child run  <variant>-seed<k>  tag mlflow.parentRunId; params: seed, variant, preset, search config
        │       metrics per epoch (step = epoch): EpochReport.scalars() (with an NB201 table:
        │                   <criterion>_gt_<column>); at its end cell_params_m, cell_mult_adds_m
        │       tags: genotype.<criterion> (current, then final), ostr.failure_reason when not FINISHED
        │       artifacts: genotypes.json, history.json, plots/heatmaps_epoch_<NNN>.png, plots/cells.png
        ├── child run  retrain-...        (``ostr-ray retrain`` of a launch's genotype nests here)
        └── child run  evaluation         (``ostr-ray evaluate``) tags ostr.kind=evaluation; params: protocol,
            │           seeds, selectors; metrics: <cell>/top1_mean, <cell>/top1_std, <cell>/runs
            └── child run  <cell>-seed<r> tags ostr.kind=evaluation_run, ostr.cell, ostr.selectors, ostr.genotype,
                        ostr.seed; params as a retrain's; metrics per epoch as a retrain's, params_m, mult_adds_m

With several variants the parent's per-variant metrics and tags are prefixed ``<variant>/``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

# -- tags ------------------------------------------------------------------------------------------------
PARENT_RUN = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
GIT_COMMIT = "mlflow.source.git.commit"
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
"""MLflow 3's UI opens an experiment of this kind on its training-runs view (not the GenAI traces view)."""
ROLE = "ostr.role"
ROLE_PARENT, ROLE_TRIAL = "parent", "trial"
KIND = "ostr.kind"
KIND_RETRAIN = "retrain"
LAUNCH_PATH = "ostr.launch_path"
LAUNCH_NAME = "ostr.launch_name"
CRITERION = "ostr.criterion"
TRIAL = "ostr.trial"
VARIANT = "ostr.variant"
SEED = "ostr.seed"
PRESET = "ostr.preset"
SPACE = "ostr.space"
STOP_REASON = "ostr.stop_reason"
FAILURE_REASON = "ostr.failure_reason"
GENOTYPE_PREFIX = "genotype."
"""``genotype.<criterion>``: a trial's current (then final) genotype of each criterion."""
CONSENSUS = "consensus_genotype"
"""The parent's consensus genotype (``<variant>/consensus_genotype`` with several variants)."""
LEGACY_CONSENSUS = "ostr.consensus_genotype"
AGREEMENT = "agreement"
VERSION_TAGS = {"ostr-ray": "ostr.version", "torch": "torch.version", "ray": "ray.version"}
MLFLOW_VERSION = "mlflow.version"
# retraining runs
PROTOCOL = "ostr.protocol"
DATASET = "ostr.dataset"
RETRAIN_GENOTYPE = "ostr.genotype"
RUN_DIR = "ostr.run_dir"
SEARCH_RUN = "ostr.search_run_id"
SOURCE = "ostr.source"
RESUMED = "ostr.resumed"
ERROR = "ostr.error"
# evaluation runs (``ostr-ray evaluate``)
KIND_EVALUATION, KIND_EVALUATION_RUN = "evaluation", "evaluation_run"
CELL = "ostr.cell"
SELECTORS = "ostr.selectors"
"""Comma-separated selectors that chose a run's cell (``consensus``, a criterion, ``seeds``, ``random``, ...)."""
OUTCOME = "ostr.outcome"
STOPPED_EARLY_AT = "ostr.stopped_early_at"
"""An evaluation run's epoch at which ``--scheduler asha`` stopped it (absent: it trained every epoch)."""
TOP1_MEAN, TOP1_STD, RUNS_DONE, RUNS_STOPPED = "top1_mean", "top1_std", "runs", "runs_stopped_early"
"""The evaluation run's per-cell metrics, as ``<cell>/<name>`` (:func:`variant_key`); the mean and std are over
the ``runs`` that trained every epoch."""

# -- metrics (besides EpochReport.scalars() on trial runs) ---------------------------------------------------
STATS_METRICS = ("agreement", "consensus_stable_for", "mean_kendall_tau", "n_seeds")
"""The parent's per-epoch cross-seed statistics; plus ``agreement_<criterion>`` for the other criteria."""
COST_METRICS = ("search_cost_trial_hours", "wall_seconds_this_run")
TRAIN_LOSS = "train_loss"
"""The metric whose last step tells how many epochs a trial run already holds (a retrain logs it too)."""
TRAIN_ACC, TEST_TOP1, TEST_TOP5 = "train_acc", "test_top1", "test_top5"
LR, DROP_PATH_PROB = "lr", "drop_path_prob"
EPOCH_SECONDS, IMAGES_PER_S = "epoch_seconds", "images_per_s"
RETRAIN_EPOCH_METRICS = (TRAIN_LOSS, TRAIN_ACC, TEST_TOP1, TEST_TOP5, LR, DROP_PATH_PROB, EPOCH_SECONDS, IMAGES_PER_S)
"""A retrain's per-epoch metrics (step = epoch): the keys of the worker's history entries that MLflow gets."""
RETRAIN_SIZE_METRICS = ("params_m", "mult_adds_m")
CELL_COST_METRICS = {"cell_params_m": "params_m", "cell_mult_adds_m": "mult_adds_m"}
"""A trial run's metric -> the cost field of its watched criterion's final cell (``ostr_ray.core.cost``)."""
BEST_TOP1, EPOCHS_DONE = "best_test_top1", "epochs_done"

# -- params (besides flatten_spec's on the parent run) ---------------------------------------------------------
SEED_PARAM, VARIANT_PARAM, PRESET_PARAM = "seed", "variant", "preset"
"""A trial run's own params."""
SEARCH_PARAM_PREFIX = "search."
"""``search.<key>``: a trial run's resolved search config value."""
SPACE_PARAM, CRITERION_PARAM = "space", "criterion"
"""Where a run without the ``ostr.space`` / ``ostr.criterion`` tags keeps them (a retrain's ``space``, a launch's
``criterion`` spec field)."""

# -- artifacts -------------------------------------------------------------------------------------------
REPORT_ARTIFACT = "report.json"
GENOTYPES_ARTIFACT = "genotypes.json"
HISTORY_ARTIFACT = "history.json"
RETRAIN_GENOTYPE_ARTIFACT = "genotype.json"
CELLS_PLOT = "plots/cells.png"
EVIDENCE_DIR = "evidence"


def heatmaps_plot(epoch: int) -> str:
    return f"plots/heatmaps_epoch_{epoch:03d}.png"


def agreement_plot(variant: str) -> str:
    return f"plots/agreement_{variant}.png"


def seeds_plot(variant: str) -> str:
    return f"plots/seeds_{variant}.png"


def variant_key(variant: str, name: str) -> str:
    """``<variant>/<name>``: a parent run's metric or tag of one variant when the launch has several."""
    return f"{variant}/{name}"


def split_variant_key(key: str) -> tuple[str | None, str]:
    """``(variant, name)`` of a :func:`variant_key`; ``(None, key)`` for an unprefixed key."""
    variant, slash, name = key.partition("/")
    return (variant, name) if slash else (None, key)


def variant_prefix(variant: str, n_variants: int) -> str:
    """``""`` for a one-variant launch, ``"<variant>/"`` otherwise."""
    return "" if n_variants <= 1 else variant_key(variant, "")


def trial_run_name(variant: str, seed: int) -> str:
    """A trial's MLflow run name (``mlflow.runName``, what the UI lists); the run is found again by its
    ``ostr.trial`` tag, :func:`ostr_ray.experiment.layout.trial_run_key`."""
    return f"{variant}-seed{seed}"


# -- values ----------------------------------------------------------------------------------------------
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
MAX_PARAM_KEY = 250
BATCH = 100
"""MLflow's limit of params + tags per ``log_batch``."""


def param_value(value: Any, limit: int = MAX_PARAM_VALUE) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 14] + "...[truncated]"


def tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 1] + "…"


def metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . /`` and spaces; anything else (say, from an NB201 table's
    column names) would fail the whole epoch's batch."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def terminal_status(trial_status: str) -> str:
    """Coordinator trial status -> MLflow run status."""
    return {"finished": "FINISHED", "stopped": "FINISHED", "failed": "FAILED"}.get(trial_status, "KILLED")


def flatten_spec(spec: Any) -> dict[str, str]:
    """The launch's full resolved config as MLflow params: spec fields, ``<variant>.<key>`` per variant
    config value, ``extra.<key>``; values as JSON text cut to MLflow's 6000 characters."""
    import dataclasses

    data = dataclasses.asdict(spec)
    variants = data.pop("variants", {})
    extra = data.pop("extra", {}) or {}
    out = {key: param_value(value) for key, value in data.items()}
    for variant, config in variants.items():
        out.update({f"{variant}.{key}": param_value(value) for key, value in config.items()})
    out.update({f"extra.{key}": param_value(value) for key, value in extra.items()})
    return out


def version_tags() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import mlflow

    out = {}
    for package, tag in VERSION_TAGS.items():
        try:
            out[tag] = version(package)
        except PackageNotFoundError:
            out[tag] = "unknown"
    out[MLFLOW_VERSION] = mlflow.__version__
    return out


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
