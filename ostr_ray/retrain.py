"""``ostr-ray retrain``: train a found architecture from scratch on Ray Train, recorded in MLflow.

What happens, in order
----------------------
1. :func:`resolve_genotype` turns the GENOTYPE argument (a genotype string or JSON, a JSON file, a launch or
   search directory, or an MLflow run id) into ``(space, genotype, source)``.
2. :func:`build_retrain_config` reads the training protocol (data, ``launch/protocols/*.yaml``) and applies
   ``--augment``, ``--set`` and ``--epochs`` on top.
3. :func:`prepare_retrain` checks everything that can be checked without Ray (data tree, batch split,
   model size against the protocol's mobile limit) and measures the network: parameters and multiply-adds
   (see :func:`measure_network` for the convention). ``--dry-run`` stops here.
4. :func:`run_retrain` checks the Ray cluster can host the workers, opens the MLflow run (driver side: no
   tracking credentials are needed on the workers), and fits a ``TorchTrainer`` whose workers run
   :func:`train_loop_per_worker`: DDP through ``ray.train.torch.prepare_model``, one checkpoint per epoch,
   automatic restarts from the latest checkpoint (``FailureConfig``). The per-epoch history travels inside the
   checkpoints, so after ``fit`` the driver logs every epoch's metrics to the run, including epochs trained
   before a worker failure or before a ``--resume``.

Resuming (``--resume RUN_DIR``): Ray Train 2.60 runs the V2 trainer, whose ``TorchTrainer.restore`` raises a
DeprecationWarning; V2 restores instead when a trainer is started again with the same ``RunConfig(name,
storage_path)``: it reloads its checkpoint manager from storage and hands the latest checkpoint to
``ray.train.get_checkpoint()``. ``retrain.json`` in the run directory keeps everything needed to do that.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ostr_ray.data import AugmentSpec, BatchStream, DataError

SPEC_FILE = "retrain.json"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
DATASETS = ("cifar10", "cifar100", "imagenet", "imagefolder", "digits", "synthetic")
"""``imagenet`` is a class-folder tree streamed from disk; ``imagefolder`` is decoded into memory once."""
SCHEDULES = ("cosine", "linear", "constant")
AUGMENTS = ("none", "randaugment")
DEFAULT_EXPERIMENT = "ostr-retrain"
FLOPS_CONVENTION = (
    "mult_adds counts one multiply-add per MAC of every conv and linear layer (torch.utils.flop_counter."
    "FlopCounterMode total / 2), batch 1, eval mode (no auxiliary head, no drop-path), at flops_resolution; "
    "BN, activations, pooling and additions are not counted. params exclude the auxiliary head."
)
MLFLOW_RUN_ID = re.compile(r"^(?:runs:/)?([0-9a-f]{32})/?$")
CONSENSUS_TAGS = ("consensus_genotype", "ostr.consensus_genotype")
CONSENSUS_TAG = CONSENSUS_TAGS[0]
"""The launch run's consensus tag as :mod:`ostr_ray.tracking` writes it (``<variant>/...`` with several)."""
GENOTYPE_TAG_PREFIX = "genotype."
GENOTYPES_ARTIFACT = "genotypes.json"


class RetrainError(ValueError):
    """Bad retrain input, one line naming the bad value; raised before any training starts."""


# ------------------------------------------------------------------------------------------- protocols


@dataclass
class RetrainConfig:
    """One retraining recipe. Protocol YAMLs give every field; ``--set key=value`` overrides any of them."""

    protocol: str = "custom"
    description: str = ""
    spaces: list[str] = field(default_factory=lambda: ["nb201", "darts", "pcdarts"])
    network_kind: str = "cifar"
    """DARTS network: ``cifar`` (NetworkCIFAR) or ``imagenet`` (NetworkImageNet)."""
    network: dict[str, Any] = field(default_factory=dict)
    """Eval-network size arguments (NB201: C, N; DARTS: C, layers, auxiliary)."""
    epochs: int = 1
    batch_size: int = 64
    """Global batch: each of the W workers trains on ``batch_size / W`` images per step."""
    lr: float = 0.025
    lr_min: float = 0.0
    lr_reference_batch: int | None = None
    """When set, the lr is ``lr * batch_size / lr_reference_batch`` (linear scaling rule)."""
    schedule: str = "cosine"
    warmup_epochs: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.0
    drop_path_prob: float = 0.0
    grad_clip: float = 0.0
    """Max gradient norm; 0 disables clipping."""
    crop_padding: int = 4
    horizontal_flip: bool = True
    cutout: int = 0
    augment: str = "none"
    image_size: int | None = None
    """Training/test resolution; None keeps the data set's own (32 for CIFAR). Streaming ImageNet: 224."""
    flops_resolution: int = 32
    max_mult_adds_m: float | None = None
    """Refuse bigger networks (ImageNet mobile setting: 600) unless --allow-large."""
    num_classes: int | None = None
    """Only for ``synthetic`` (default 10); other data sets know their classes."""
    train_subset: int | None = None
    """Class-balanced subset of the training images (in-memory data sets), for quick checks."""
    test_subset: int | None = None
    eval_batch_size: int = 256
    loader_workers: int | None = None
    """Streaming loader processes per worker; None = cpus per worker - 1 (at least 1)."""
    download: bool = False
    seed: int = 0
    amp: bool = True
    """bf16 autocast, on GPU workers only."""
    channels_last: bool = True
    """channels_last memory format, on GPU workers only."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(RetrainConfig)}


def protocol_dir() -> Path:
    return Path(str(resources.files("launch"))) / "protocols"


def list_protocols() -> list[str]:
    return sorted(p.stem for p in protocol_dir().glob("*.yaml"))


def load_protocol(name: str) -> dict[str, Any]:
    """The protocol's raw mapping; ``name`` may also be a path to a YAML file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else protocol_dir() / f"{name}.yaml"
    if not path.is_file():
        raise RetrainError(f"unknown protocol {name!r}; choose from {', '.join(list_protocols())}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RetrainError(f"protocol {name!r} is not a mapping")
    return {"protocol": path.stem, **data}


def default_protocol(space: str, dataset: str) -> str:
    if space == "nb201":
        return "nb201"
    return "darts-imagenet" if dataset == "imagenet" else "darts-cifar"


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs (YAML values); ``network.C=8`` sets one network argument."""
    values: dict[str, Any] = {}
    for text in items or []:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RetrainError(f"--set {text!r} is not key=value")
        value = yaml.safe_load(raw)
        if key.startswith("network."):
            values.setdefault("network", {})[key.removeprefix("network.")] = value
        elif key == "network" and isinstance(value, dict):
            values.setdefault("network", {}).update(value)
        else:
            values[key] = value
    return values


def build_retrain_config(
    protocol: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    augment: str | None = None,
    epochs: int | None = None,
) -> RetrainConfig:
    """protocol <- ``--augment`` (RandAugment doubles the epochs: the papers' "(Aug)" rows) <- ``--set``
    <- ``--epochs``; validated."""
    values = load_protocol(protocol)
    if augment not in (None, "none"):
        if augment not in AUGMENTS:
            raise RetrainError(f"unknown --augment {augment!r}; choose from {', '.join(AUGMENTS)}")
        values["augment"] = augment
        values["epochs"] = 2 * int(values.get("epochs", 1))
    for key, value in (overrides or {}).items():
        if key == "network" and isinstance(value, dict):
            values["network"] = {**values.get("network", {}), **value}
        else:
            values[key] = value
    if epochs is not None:
        values["epochs"] = epochs
    return config_from_dict(values)


def config_from_dict(values: Mapping[str, Any]) -> RetrainConfig:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise RetrainError(f"unknown retrain setting {unknown[0]!r}; known: {', '.join(sorted(_FIELDS))}")
    try:
        config = RetrainConfig(**values)
    except TypeError as exc:
        raise RetrainError(f"bad retrain settings: {exc}") from None
    _validate(config)
    return config


def _validate(c: RetrainConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise RetrainError(message)

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(is_int(c.epochs) and c.epochs >= 1, f"epochs must be an int >= 1, got {c.epochs!r}")
    need(is_int(c.batch_size) and c.batch_size >= 1, f"batch_size must be an int >= 1, got {c.batch_size!r}")
    need(c.schedule in SCHEDULES, f"unknown schedule {c.schedule!r}; choose from {', '.join(SCHEDULES)}")
    need(c.augment in AUGMENTS, f"unknown augment {c.augment!r}; choose from {', '.join(AUGMENTS)}")
    need(c.network_kind in ("cifar", "imagenet"), f"network_kind must be cifar or imagenet, got {c.network_kind!r}")
    need(isinstance(c.network, dict), f"network must be a mapping, got {c.network!r}")
    for name in ("lr", "eval_batch_size", "flops_resolution"):
        need(isinstance(getattr(c, name), int | float) and getattr(c, name) > 0, f"{name} must be > 0")
    for name in ("lr_min", "weight_decay", "momentum", "auxiliary_weight", "grad_clip", "label_smoothing"):
        need(isinstance(getattr(c, name), int | float) and getattr(c, name) >= 0, f"{name} must be >= 0")
    for name in ("warmup_epochs", "crop_padding", "cutout"):
        need(is_int(getattr(c, name)) and getattr(c, name) >= 0, f"{name} must be an int >= 0")
    need(0 <= c.drop_path_prob < 1, f"drop_path_prob must be in [0, 1), got {c.drop_path_prob!r}")
    need(c.label_smoothing < 1, f"label_smoothing must be < 1, got {c.label_smoothing!r}")
    need(c.warmup_epochs < c.epochs or c.warmup_epochs == 0, f"warmup_epochs {c.warmup_epochs} >= epochs")
    for name in ("image_size", "num_classes", "train_subset", "test_subset", "lr_reference_batch"):
        value = getattr(c, name)
        need(value is None or (is_int(value) and value >= 1), f"{name} must be None or an int >= 1, got {value!r}")
    need(c.loader_workers is None or (is_int(c.loader_workers) and c.loader_workers >= 0), "loader_workers >= 0")
    need(c.max_mult_adds_m is None or c.max_mult_adds_m > 0, "max_mult_adds_m must be None or > 0")


def effective_lr(config: RetrainConfig) -> float:
    """The peak lr after linear batch scaling (when the protocol has a reference batch)."""
    if config.lr_reference_batch:
        return config.lr * config.batch_size / config.lr_reference_batch
    return config.lr


def lr_factor(config: RetrainConfig, epoch: int) -> float:
    """Multiplier of the peak lr during ``epoch`` (0-based), constant within an epoch as in DARTS.

    Warm-up: ``(epoch + 1) / W`` for the first W epochs. Then over the remaining ``T = epochs - W`` epochs
    (``t = epoch - W``): cosine ``m + (1 - m)(1 + cos(pi t / T)) / 2`` with ``m = lr_min / lr`` (torch's
    CosineAnnealingLR stepped per epoch), linear ``1 - t / T`` (PC-DARTS), or constant.
    """
    warm = config.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / warm
    t, total = epoch - warm, max(1, config.epochs - warm)
    floor = config.lr_min / effective_lr(config)
    if config.schedule == "cosine":
        return floor + (1 - floor) * (1 + math.cos(math.pi * t / total)) / 2
    if config.schedule == "linear":
        return max(floor, 1 - t / total)
    return 1.0


# ------------------------------------------------------------------------------------------- genotypes


def resolve_genotype(
    text: str,
    *,
    criterion: str | None = None,
    seed: int | None = None,
    variant: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[str, Any, dict[str, Any]]:
    """``(space name, genotype, source)`` for the GENOTYPE argument.

    Accepted: an NB201 string; a DARTS genotype (short string, ``Genotype(...)`` repr, or JSON); a JSON file
    (a genotype's JSON, or a ``{criterion: genotype}`` mapping such as the ``genotypes.json`` artifact); a
    launch directory or its ``report.json`` (the variant's consensus genotype; ``seed`` picks that seed's
    genotype of ``criterion``, default the launch's criterion; ``criterion`` alone picks the criterion's
    consensus); an ``ostr-ray search`` output directory (its final genotype of ``criterion``); or an MLflow run
    id (``runs:/<id>`` too) of a search trial or launch, read from its ``genotype.<criterion>`` /
    ``consensus_genotype`` tags (:mod:`ostr_ray.tracking`'s names), else its ``genotypes.json`` artifact; with
    ``seed``, the launch run's trial of that seed.

    ``source`` always has ``search_run_id`` and ``parent_run_id`` (None when unknown) and says where the
    genotype came from (``kind``: text, file, launch, search, mlflow). A launch directory's MLflow record
    (``mlflow_runs.json``) gives the run ids and its ``tracking_uri``.
    """
    if not isinstance(text, str) or not text.strip():
        raise RetrainError("GENOTYPE is empty; give a genotype, a JSON file, a launch dir or an MLflow run id")
    text = text.strip()
    source: dict[str, Any] = {"kind": "text", "search_run_id": None, "parent_run_id": None}
    path = Path(text).expanduser()
    try:
        is_path = path.exists()
    except (OSError, ValueError):  # e.g. a long genotype repr is not a valid file name
        is_path = False
    if is_path:
        return _from_path(path, criterion=criterion, seed=seed, variant=variant, source=source)
    match = MLFLOW_RUN_ID.match(text)
    if match:
        return _from_mlflow(match.group(1), criterion=criterion, seed=seed, variant=variant, tracking_uri=tracking_uri)
    space, genotype = decode_genotype(text)
    return space, genotype, source


def decode_genotype(text: str, space: str | None = None) -> tuple[str, Any]:
    """Decode a genotype string or JSON text; the space comes from the JSON's ``space``, the hint, or the
    text's shape (NB201 strings start with ``|``)."""
    from searchspaces import SearchSpaceError, get_space

    if not isinstance(text, str):
        raise RetrainError(f"a genotype must be text, got {type(text).__name__}: {text!r}")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RetrainError(f"genotype JSON {_short(stripped)} does not parse: {exc}") from None
        space = data.get("space", space) if isinstance(data, dict) else space
    if space is None:
        space = "nb201" if stripped.startswith("|") else "darts"
    try:
        return space, get_space(space).parse_genotype(stripped)
    except SearchSpaceError as exc:
        raise RetrainError(f"cannot decode genotype {_short(stripped)} ({space}): {exc}") from None


def _short(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _from_path(
    path: Path, *, criterion: str | None, seed: int | None, variant: str | None, source: dict[str, Any]
) -> tuple[str, Any, dict[str, Any]]:
    source = {**source, "kind": "file", "path": str(path.resolve())}
    if path.is_dir():
        report = path / "report.json"
        if not report.is_file():
            raise RetrainError(f"{path} has no report.json: not an ostr-ray launch or search directory")
        path = report
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RetrainError(f"cannot read genotype file {path}: {exc}") from None
    if not raw.strip().startswith("{"):
        space, genotype = decode_genotype(raw)
        return space, genotype, source
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RetrainError(f"{path} is not valid JSON: {exc}") from None
    if "variants" in data:
        return _from_launch_report(data, path, criterion=criterion, seed=seed, variant=variant)
    if "final_genotypes" in data:
        config = data.get("config", {})
        crit = criterion or config.get("criterion", "ostr")
        text = data["final_genotypes"].get(crit)
        if not text:
            raise RetrainError(
                f"search report {path} has no {crit!r} genotype; it has {sorted(data['final_genotypes'])}"
            )
        space, genotype = decode_genotype(text, config.get("space"))
        return space, genotype, {**source, "kind": "search", "criterion": crit, "seed": config.get("seed")}
    if "space" in data or "arch" in data or "normal" in data:
        space, genotype = decode_genotype(json.dumps(data))
        return space, genotype, source
    text = _pick_genotype(data, criterion, f"genotype file {path}")
    space, genotype = decode_genotype(text)
    return space, genotype, source


def _pick_genotype(data: Mapping[str, Any], criterion: str | None, what: str) -> str:
    """The genotype in a ``{criterion: genotype}`` mapping (``genotypes.json``), optionally with a
    ``consensus`` entry or a nested ``genotypes`` mapping."""
    nested = data.get("genotypes") if isinstance(data.get("genotypes"), Mapping) else {}
    table = {**{k: v for k, v in data.items() if isinstance(v, str)}, **nested}
    if criterion is not None:
        if not table.get(criterion):
            raise RetrainError(f"{what} has no genotype for criterion {criterion!r}; it has {sorted(table)}")
        return table[criterion]
    for key in ("consensus", "consensus_genotype", "ostr"):
        if table.get(key):
            return table[key]
    genotypes = [v for v in table.values() if v]
    if len(genotypes) == 1:
        return genotypes[0]
    raise RetrainError(f"{what} holds no single genotype; pick one with --criterion from {sorted(table)}")


def _from_launch_report(
    report: Mapping[str, Any], path: Path, *, criterion: str | None, seed: int | None, variant: str | None
) -> tuple[str, Any, dict[str, Any]]:
    variants = report.get("variants") or {}
    if variant is None:
        if len(variants) != 1:
            raise RetrainError(f"launch {path.parent} has variants {sorted(variants)}; pick one with --variant")
        variant = next(iter(variants))
    if variant not in variants:
        raise RetrainError(f"launch {path.parent} has no variant {variant!r}; it has {sorted(variants)}")
    data = variants[variant]
    config = ((report.get("launch") or {}).get("variants") or {}).get(variant, {})
    space_hint = config.get("space")
    crit = criterion or report.get("criterion") or config.get("criterion") or "ostr"
    runs = _launch_mlflow_runs(path.parent)
    source: dict[str, Any] = {
        "kind": "launch",
        "path": str(path.parent.resolve()),
        "variant": variant,
        "search_run_id": runs.get("parent_run_id"),  # the consensus comes from the launch run itself
        "parent_run_id": runs.get("parent_run_id"),
        "tracking_uri": runs.get("tracking_uri"),
        "experiment_id": runs.get("experiment_id"),
    }
    if seed is not None:
        seeds = data.get("seeds") or {}
        if str(seed) not in seeds:
            raise RetrainError(f"launch {path.parent} has no seed {seed}; seeds are {sorted(seeds, key=int)}")
        text = (seeds[str(seed)].get("genotypes") or {}).get(crit)
        if not text:
            raise RetrainError(f"seed {seed} of launch {path.parent} has no {crit!r} genotype")
        trial_run = (runs.get("children") or {}).get(f"{variant}/{seed}")
        source.update(seed=seed, criterion=crit, search_run_id=trial_run or source["search_run_id"])
    elif criterion is not None:
        text = (data.get("criterion_consensus") or {}).get(criterion)
        if not text:
            raise RetrainError(f"launch {path.parent} has no consensus genotype for criterion {criterion!r}")
        source.update(criterion=criterion, consensus=True)
    else:
        text = data.get("consensus_genotype")
        if not text:
            raise RetrainError(f"launch {path.parent} has no consensus genotype yet (variant {variant!r})")
        source.update(criterion=crit, consensus=True)
    space, genotype = decode_genotype(text, space_hint)
    return space, genotype, source


def _launch_mlflow_runs(launch_dir: Path) -> dict[str, Any]:
    """The launch's MLflow record (``mlflow_runs.json``, written by :mod:`ostr_ray.tracking`): tracking URI,
    experiment, parent run and ``{"<variant>/<seed>": child run id}``; empty when the launch was not tracked."""
    from ostr_ray.tracking import RUNS_FILE

    try:
        data = json.loads((launch_dir / RUNS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _mlflow_client(tracking_uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _from_mlflow(
    run_id: str, *, criterion: str | None, seed: int | None, variant: str | None, tracking_uri: str | None
) -> tuple[str, Any, dict[str, Any]]:
    """A launch run (``ostr.role=parent``: its ``consensus_genotype`` tag, ``<variant>/consensus_genotype``
    with several variants; ``seed`` goes to that seed's trial run) or a trial run (``genotype.<criterion>``)."""
    from mlflow.exceptions import MlflowException

    client = _mlflow_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RetrainError(
            f"no MLflow run {run_id} at {tracking_uri}: {str(exc).splitlines()[0]} (pass --tracking-uri?)"
        ) from None
    if seed is not None:
        run = _child_for_seed(client, run, seed, variant)
    tags, params = run.data.tags, run.data.params
    parent_tags = tags
    if tags.get("mlflow.parentRunId"):
        try:
            parent_tags = client.get_run(tags["mlflow.parentRunId"]).data.tags
        except MlflowException:
            parent_tags = {}
    space_hint = tags.get("ostr.space") or params.get("space")
    default_crit = tags.get("ostr.criterion") or parent_tags.get("ostr.criterion") or params.get("criterion") or "ostr"
    consensus = _consensus_tag(tags, variant, run.info.run_id)
    text = None
    if criterion is not None:
        text = tags.get(GENOTYPE_TAG_PREFIX + criterion)
    elif consensus:
        text = consensus
    else:
        text = tags.get(GENOTYPE_TAG_PREFIX + default_crit)
    if not text:
        text = _genotype_artifact(client, run.info.run_id, criterion)
    if not text:
        wanted = f"tag {GENOTYPE_TAG_PREFIX}{criterion or default_crit}"
        raise RetrainError(
            f"MLflow run {run.info.run_id} has no genotype "
            f"({wanted}, {CONSENSUS_TAG} or a {GENOTYPES_ARTIFACT} artifact)"
        )
    space, genotype = decode_genotype(text, space_hint)
    from_consensus = criterion is None and bool(consensus)
    source = {
        "kind": "mlflow",
        "search_run_id": run.info.run_id,
        # a trial nests under its launch's run; a launch's consensus nests under the launch run itself
        "parent_run_id": tags.get("mlflow.parentRunId") or (run.info.run_id if from_consensus else None),
        "experiment_id": run.info.experiment_id,
        "tracking_uri": tracking_uri,
        "criterion": None if from_consensus else (criterion or default_crit),
        "consensus": from_consensus,
    }
    if tags.get("ostr.seed") is not None:
        source["seed"] = int(tags["ostr.seed"])
    return space, genotype, source


def _consensus_tag(tags: Mapping[str, str], variant: str | None, run_id: str) -> str | None:
    """The consensus genotype tag: ``consensus_genotype`` (the tracking module's, one variant),
    ``<variant>/consensus_genotype`` (several variants) or ``ostr.consensus_genotype``."""
    if variant is not None:
        return tags.get(f"{variant}/{CONSENSUS_TAGS[0]}")
    for name in CONSENSUS_TAGS:
        if tags.get(name):
            return tags[name]
    per_variant = {k.split("/")[0]: v for k, v in tags.items() if k.endswith("/" + CONSENSUS_TAGS[0]) and v}
    if len(per_variant) > 1:
        raise RetrainError(f"MLflow run {run_id} has variants {sorted(per_variant)}; pick one with --variant")
    return next(iter(per_variant.values()), None)


def _child_for_seed(client: Any, run: Any, seed: int, variant: str | None) -> Any:
    """The trial run (child) of a launch run whose ``ostr.seed`` tag (or ``seed`` param) is ``seed``."""
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=1000
    )
    matches = [
        child
        for child in children
        if str(seed) in (child.data.tags.get("ostr.seed"), child.data.params.get("seed"))
        and variant in (None, child.data.tags.get("ostr.variant"))
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RetrainError(f"MLflow run {run.info.run_id} has no child run for seed {seed}")
    variants = sorted(str(m.data.tags.get("ostr.variant")) for m in matches)
    raise RetrainError(f"MLflow run {run.info.run_id} has seed {seed} in variants {variants}; pick one with --variant")


def _genotype_artifact(client: Any, run_id: str, criterion: str | None) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, GENOTYPES_ARTIFACT, tmp)
            data = json.loads(Path(local).read_text())
    except (MlflowException, OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, Mapping):
        return None
    try:
        return _pick_genotype(data, criterion, f"artifact {GENOTYPES_ARTIFACT} of run {run_id}")
    except RetrainError:
        return None


# ------------------------------------------------------------------------------------------- network & size


def build_network(space: str, genotype: Any, config: RetrainConfig, num_classes: int) -> nn.Module:
    """The eval network of ``genotype`` sized by the protocol; forward returns ``(logits, aux_or_None)``."""
    from searchspaces import SearchSpaceError, get_space

    kwargs = dict(config.network)
    if space in ("darts", "pcdarts"):
        kwargs["dataset_kind"] = config.network_kind
    try:
        return get_space(space).build_eval_network(genotype, num_classes=num_classes, **kwargs)
    except (SearchSpaceError, TypeError) as exc:
        raise RetrainError(f"cannot build the {space} network with {config.network}: {exc}") from None


def measure_network(model: nn.Module, resolution: int, in_channels: int = 3) -> dict[str, Any]:
    """Parameters and multiply-adds of ``model``.

    Convention (DARTS / NB201 papers): ``params`` counts trainable parameters without the auxiliary head;
    ``mult_adds`` is torch's ``FlopCounterMode`` total divided by 2 (the counter reports 2 FLOPs per
    multiply-accumulate of convs and matmuls/linears; BN, activations, pooling and element-wise additions
    are not counted) for one ``resolution x resolution`` image in eval mode, so the auxiliary head and
    drop-path do not run. With this counter DARTS_V2 is 528.4M at 32x32 (CIFAR) and 529.9M at 224x224
    (ImageNet; the paper's 574M came from a different counter), NB201 cells match the benchmark's MFLOPs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from searchspaces.darts_eval import AUXILIARY_PREFIX

    params = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(AUXILIARY_PREFIX)
    )
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
    mult_adds = counter.get_total_flops() // 2
    return {
        "params": int(params),
        "params_m": params / 1e6,
        "mult_adds": int(mult_adds),
        "mult_adds_m": mult_adds / 1e6,
        "flops_resolution": resolution,
        "flops_convention": FLOPS_CONVENTION,
    }


# ------------------------------------------------------------------------------------------- data checks


@dataclass
class DataInfo:
    num_classes: int
    train_images: int
    test_images: int
    streaming: bool


def _split_dirs(root: Path) -> tuple[Path, Path]:
    if not root.is_dir():
        raise DataError(f"data dir {root} " + ("is not a directory" if root.exists() else "does not exist"))
    train = root / "train" if (root / "train").is_dir() else root
    for sub in ("test", "val"):
        if (root / sub).is_dir():
            return train, root / sub
    raise DataError(f"data dir {root} has no test/ or val/ class-folder tree to evaluate on")


def check_data(dataset: str, data_dir: str | None, config: RetrainConfig, *, dry_run: bool = False) -> DataInfo:
    """Cheap pre-flight of the data (folders and counts, no decoding): a wrong --data-dir fails here.

    A dry run may omit the ImageNet tree (sizing a network needs no images): 1000 classes are assumed."""
    from ostr_ray.data import check_data_source, class_folder_check

    if dry_run and dataset == "imagenet" and not data_dir:
        return DataInfo(1000, 1281167, 50000, streaming=True)

    if dataset not in DATASETS:
        raise RetrainError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if config.num_classes is not None and dataset != "synthetic":
        raise RetrainError(f"num_classes applies to the synthetic data set only, not {dataset!r}")
    if dataset in ("imagefolder", "imagenet"):
        if not data_dir:
            raise RetrainError(f"dataset {dataset!r} needs --data-dir pointing at a class-folder tree")
        train, test = _split_dirs(Path(data_dir))
        n_train, n_test = class_folder_check(train), class_folder_check(test)
        classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
        test_classes = sorted(e.name for e in os.scandir(test) if e.is_dir() and not e.name.startswith("."))
        if classes != test_classes:
            raise DataError(f"{train} and {test} have different class folders ({len(classes)} vs {len(test_classes)})")
        info = DataInfo(len(classes), n_train, n_test, streaming=dataset == "imagenet")
    elif dataset in ("cifar10", "cifar100"):
        check_data_source(dataset, data_dir, download=config.download)
        info = DataInfo(10 if dataset == "cifar10" else 100, 50000, 10000, False)
    elif dataset == "digits":
        info = DataInfo(10, 1500, 297, False)
    else:
        info = DataInfo(config.num_classes or 10, 512, 128, False)
    if config.train_subset:
        info.train_images = min(info.train_images, config.train_subset)
    if config.test_subset:
        info.test_images = min(info.test_images, config.test_subset)
    return info


# ------------------------------------------------------------------------------------------- the spec


@dataclass
class RetrainSpec:
    """Everything one retrain needs, resolved and checked; saved as ``retrain.json`` in the run dir."""

    space: str
    genotype: str
    genotype_json: dict[str, Any]
    source: dict[str, Any]
    dataset: str
    data_dir: str | None
    config: dict[str, Any]
    num_classes: int
    size: dict[str, Any]
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    storage: str = ""
    name: str = ""
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    debug: dict[str, Any] = field(default_factory=dict)
    """Test hooks for the workers (``pid_dir``, ``hold_after_epoch``); empty in normal runs."""

    @property
    def run_dir(self) -> Path:
        return Path(self.storage) / self.name

    def retrain_config(self) -> RetrainConfig:
        return config_from_dict(self.config)

    def summary(self) -> dict[str, Any]:
        """The dry-run / JSON view: what will be trained, and its size."""
        config = self.retrain_config()
        return {
            "space": self.space,
            "genotype": self.genotype,
            "source": self.source,
            "protocol": config.protocol,
            "network": {"kind": config.network_kind, **config.network, "num_classes": self.num_classes},
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            **{k: v for k, v in self.size.items()},
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "per_worker_batch": config.batch_size // self.workers,
            "lr": effective_lr(config),
            "augment": config.augment,
            "workers": self.workers,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "run_dir": str(self.run_dir),
        }


def prepare_retrain(
    genotype_text: str,
    *,
    dataset: str,
    data_dir: str | None = None,
    protocol: str | None = None,
    augment: str | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_failures: int = 2,
    allow_large: bool = False,
    criterion: str | None = None,
    seed: int | None = None,
    variant: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    tracking_uri: str | None = None,
    dry_run: bool = False,
) -> RetrainSpec:
    """Resolve and check every input and measure the network; no Ray, no MLflow writes, no training."""
    if workers < 1:
        raise RetrainError(f"--workers must be >= 1, got {workers}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise RetrainError(f"resources per worker must be positive (cpus {cpus_per_worker}, gpus {gpus_per_worker})")
    if gpus_per_worker > 1:
        raise RetrainError(f"--gpus-per-worker {gpus_per_worker}: a DDP worker drives at most one GPU")
    if max_failures < -1:
        raise RetrainError(f"--max-failures must be >= -1 (-1 = unlimited), got {max_failures}")
    if dataset not in DATASETS:
        raise RetrainError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    from ostr_ray.tracking import TrackingError, resolve_tracking_uri

    storage_root = Path(storage or "ostr_runs").expanduser().resolve()
    try:
        lookup_uri = resolve_tracking_uri(tracking_uri, str(storage_root))
    except TrackingError as exc:
        raise RetrainError(str(exc)) from None
    space, genotype, source = resolve_genotype(
        genotype_text, criterion=criterion, seed=seed, variant=variant, tracking_uri=lookup_uri
    )
    protocol = protocol or default_protocol(space, dataset)
    config = build_retrain_config(protocol, overrides, augment=augment, epochs=epochs)
    if space not in config.spaces:
        raise RetrainError(
            f"protocol {config.protocol!r} trains {', '.join(config.spaces)} genotypes, not {space!r}; "
            f"use --protocol {default_protocol(space, dataset)}"
        )
    if dataset == "imagenet" and config.crop_padding:
        raise RetrainError("streamed ImageNet uses RandomResizedCrop; set crop_padding=0")
    info = check_data(dataset, data_dir, config, dry_run=dry_run)
    if config.batch_size % workers:
        raise RetrainError(f"batch_size {config.batch_size} does not split evenly over {workers} workers")
    per_worker = config.batch_size // workers
    if per_worker > info.train_images // workers:
        raise RetrainError(
            f"per-worker batch {per_worker} exceeds the {info.train_images // workers} training images per worker"
        )
    model = build_network(space, genotype, config, info.num_classes)
    size = measure_network(model, config.flops_resolution)
    if config.max_mult_adds_m and size["mult_adds_m"] > config.max_mult_adds_m and not allow_large:
        raise RetrainError(
            f"{size['mult_adds_m']:.1f}M multiply-adds at {config.flops_resolution}x{config.flops_resolution} exceeds "
            f"the {config.protocol} limit of {config.max_mult_adds_m:g}M (mobile setting); pass --allow-large"
        )
    return RetrainSpec(
        space=space,
        genotype=genotype.to_str(),
        genotype_json=genotype.to_json(),
        source=source,
        dataset=dataset,
        data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        config=config.to_dict(),
        num_classes=info.num_classes,
        size=size,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        max_failures=max_failures,
        storage=str(storage_root),
        name=name or f"retrain-{space}-{config.protocol}-{time.strftime('%Y%m%d-%H%M%S')}",
        # a launch dir's own store, so the retrain run lands beside (and nests under) its search runs
        tracking_uri=tracking_uri or source.get("tracking_uri"),
    )


def load_spec(run_dir: str | os.PathLike[str]) -> RetrainSpec:
    path = Path(run_dir).expanduser() / SPEC_FILE
    if not path.is_file():
        raise RetrainError(f"no {SPEC_FILE} in {run_dir}; is it an ostr-ray retrain run directory?")
    return RetrainSpec(**json.loads(path.read_text()))


def _save_spec(spec: RetrainSpec) -> None:
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = spec.run_dir / (SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(spec), indent=1))
    os.replace(tmp, spec.run_dir / SPEC_FILE)


# ------------------------------------------------------------------------------------------- tracking


def tracking_uri_for(spec: RetrainSpec) -> str:
    """``--tracking-uri`` (or the launch's recorded store) > ``MLFLOW_TRACKING_URI`` >
    ``sqlite:///<storage>/mlflow.db``, by :func:`ostr_ray.tracking.resolve_tracking_uri`; checked with one
    cheap call (a dead server fails here, in seconds, before Ray starts)."""
    from ostr_ray.tracking import TrackingError, check_tracking_uri, resolve_tracking_uri

    try:
        uri = resolve_tracking_uri(spec.tracking_uri, spec.storage)
        check_tracking_uri(uri)
    except TrackingError as exc:
        raise RetrainError(str(exc)) from None
    return uri


def _flat_params(spec: RetrainSpec) -> dict[str, str]:
    config = spec.retrain_config()
    params: dict[str, Any] = {
        k: v for k, v in config.to_dict().items() if k not in ("network", "spaces", "description")
    }
    params.update({f"network.{k}": v for k, v in config.network.items()})
    params.update(
        space=spec.space,
        dataset=spec.dataset,
        num_classes=spec.num_classes,
        workers=spec.workers,
        cpus_per_worker=spec.cpus_per_worker,
        gpus_per_worker=spec.gpus_per_worker,
        effective_lr=effective_lr(config),
        params_m=round(spec.size["params_m"], 6),
        mult_adds_m=round(spec.size["mult_adds_m"], 3),
    )
    return {k: str(v)[:500] for k, v in params.items()}


def _open_mlflow_run(spec: RetrainSpec, client: Any) -> str:
    """Create the run (linked to its search) or, on resume, reopen it; returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    if spec.mlflow_run_id:
        client.update_run(spec.mlflow_run_id, status="RUNNING")
        client.set_tag(spec.mlflow_run_id, "ostr.resumed", "true")
        return spec.mlflow_run_id
    experiment_id = spec.source.get("experiment_id")
    if experiment_id is None and spec.source.get("parent_run_id"):
        experiment_id = _experiment_of(client, spec.source["parent_run_id"])
    if experiment_id is None:
        found = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        experiment_id = found.experiment_id if found else _create_experiment(spec, client)
    config = spec.retrain_config()
    tags = {
        "mlflow.runName": spec.name,
        "ostr.kind": "retrain",
        "ostr.space": spec.space,
        "ostr.protocol": config.protocol,
        "ostr.dataset": spec.dataset,
        "ostr.genotype": spec.genotype,
        "ostr.run_dir": str(spec.run_dir),
    }
    if spec.source.get("search_run_id"):
        tags["ostr.search_run_id"] = spec.source["search_run_id"]
    if spec.source.get("parent_run_id"):
        tags["mlflow.parentRunId"] = spec.source["parent_run_id"]
    elif spec.source.get("search_run_id"):  # retraining a launch's consensus: nest under the launch run
        tags["mlflow.parentRunId"] = spec.source["search_run_id"]
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    size_metrics = [
        Metric("params_m", spec.size["params_m"], now, 0),
        Metric("mult_adds_m", spec.size["mult_adds_m"], now, 0),
    ]
    params = [Param(k, v) for k, v in _flat_params(spec).items()]
    for i in range(0, len(params), 90):
        client.log_batch(run_id, params=params[i : i + 90])
    client.log_batch(run_id, metrics=size_metrics, tags=[RunTag("ostr.source", json.dumps(spec.source)[:5000])])
    return run_id


def _create_experiment(spec: RetrainSpec, client: Any) -> str:
    """A local store (sqlite/file) keeps its artifacts beside the runs, not in ./mlruns of the cwd."""
    location = None
    if str(client.tracking_uri).startswith(("sqlite:", "file:")) or "://" not in str(client.tracking_uri):
        location = (Path(spec.storage) / "mlartifacts").as_uri()
    return client.create_experiment(DEFAULT_EXPERIMENT, artifact_location=location)


def _experiment_of(client: Any, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.experiment_id
    except MlflowException:
        return None


_EPOCH_KEYS = (
    "train_loss",
    "train_acc",
    "test_top1",
    "test_top5",
    "lr",
    "drop_path_prob",
    "epoch_seconds",
    "images_per_s",
)


def _log_history(client: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics (step = epoch, timestamp = when the epoch ended); epochs already logged (a resumed
    run) are skipped, so every epoch appears once."""
    from mlflow.entities import Metric

    done = {m.step for m in client.get_metric_history(run_id, "test_top1")}
    metrics = [
        Metric(key, float(entry[key]), int(entry.get("time", time.time()) * 1000), int(entry["epoch"]))
        for entry in history
        if int(entry["epoch"]) not in done
        for key in _EPOCH_KEYS
        if key in entry
    ]
    for i in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[i : i + 900])
    if history:
        now = int(time.time() * 1000)
        last = history[-1]
        best = max(entry["test_top1"] for entry in history)
        finals = [Metric("best_test_top1", best, now, int(last["epoch"])), Metric("epochs_done", last["epoch"], now, 0)]
        client.log_batch(run_id, metrics=finals)


# ------------------------------------------------------------------------------------------- Ray


def connect_ray(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; reuses an already initialised Ray (tests, notebooks) when no
    address is given. Returns whether this call started it."""
    import ray

    if ray.is_initialized() and address is None:
        return False
    if ray.is_initialized():
        ray.shutdown()
    try:
        if address:
            ray.init(address=address, logging_level="ERROR")
        else:
            ray.init(include_dashboard=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RetrainError(f"cannot reach Ray at --address {address!r}: {str(exc).splitlines()[0]}") from None
    return True


def check_cluster(spec: RetrainSpec) -> None:
    """The workers fit the cluster: totals and, per worker, one node with its CPUs/GPUs."""
    import ray

    total = ray.cluster_resources()
    need_cpu = spec.workers * spec.cpus_per_worker
    need_gpu = spec.workers * spec.gpus_per_worker
    if need_gpu > total.get("GPU", 0):
        raise RetrainError(
            f"{spec.workers} workers x {spec.gpus_per_worker:g} GPU need {need_gpu:g} GPUs; "
            f"the Ray cluster has {total.get('GPU', 0):g}"
        )
    if need_cpu > total.get("CPU", 0):
        raise RetrainError(
            f"{spec.workers} workers x {spec.cpus_per_worker:g} CPU need {need_cpu:g} CPUs; "
            f"the Ray cluster has {total.get('CPU', 0):g}"
        )
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if nodes and not any(
        r.get("CPU", 0) >= spec.cpus_per_worker and r.get("GPU", 0) >= spec.gpus_per_worker for r in nodes
    ):
        raise RetrainError(
            f"no Ray node has {spec.cpus_per_worker:g} CPUs and {spec.gpus_per_worker:g} GPUs for one worker"
        )


def _trainer(spec: RetrainSpec) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources_per_worker = {"CPU": spec.cpus_per_worker}
    if spec.gpus_per_worker:
        resources_per_worker["GPU"] = spec.gpus_per_worker
    loop_config = {
        "space": spec.space,
        "genotype_json": spec.genotype_json,
        "dataset": spec.dataset,
        "data_dir": spec.data_dir,
        "config": spec.config,
        "num_classes": spec.num_classes,
        "cpus_per_worker": spec.cpus_per_worker,
        "debug": spec.debug,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=spec.workers, use_gpu=spec.gpus_per_worker > 0, resources_per_worker=resources_per_worker
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=spec.storage,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # rank 0 prints one line per epoch
        ),
    )


def read_history(checkpoint: Any) -> list[dict[str, Any]]:
    """The per-epoch metrics stored in a retrain checkpoint (every epoch up to it)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as folder:
        path = Path(folder) / HISTORY_FILE
        return json.loads(path.read_text()) if path.is_file() else []


def run_retrain(
    spec: RetrainSpec, *, address: str | None = None, on_start: Callable[[RetrainSpec], None] | None = None
) -> dict[str, Any]:
    """Train ``spec`` on Ray Train and log it to MLflow; returns the summary with the final metrics.

    ``on_start(spec)`` runs once every check passed and the MLflow run exists, right before training (the
    CLI prints the network's size there, so bad input stays a one-line error). Runs again with the same
    ``spec`` (``--resume``) continue from the latest checkpoint in the run dir.
    """
    uri = tracking_uri_for(spec)  # seconds; before Ray, which takes longer to start
    owned = connect_ray(address)
    try:
        check_cluster(spec)
        client = _mlflow_client(uri)
        spec.mlflow_run_id = _open_mlflow_run(spec, client)
        spec.tracking_uri = uri
        _save_spec(spec)
        if on_start is not None:
            on_start(spec)
        error: BaseException | None = None
        result = None
        try:
            result = _trainer(spec).fit()
        except BaseException as exc:  # failed after its retries, interrupted, or Ray went away
            error = exc
        history = _finish_mlflow_run(spec, client, result, error)
        if error is not None:
            raise error
    finally:
        if owned:
            import ray

            ray.shutdown()
    last = history[-1] if history else {}
    return {
        **spec.summary(),
        "mlflow_run_id": spec.mlflow_run_id,
        "tracking_uri": spec.tracking_uri,
        "epochs_done": last.get("epoch", 0),
        "test_top1": last.get("test_top1"),
        "test_top5": last.get("test_top5"),
        "best_test_top1": max((h["test_top1"] for h in history), default=None),
        "history": history,
    }


def _finish_mlflow_run(spec: RetrainSpec, client: Any, result: Any, error: BaseException | None) -> list[dict]:
    """Log every finished epoch (from the latest checkpoint's history) and close the run; never masks
    ``error``: a logging problem after a failed fit is only a warning."""
    import warnings

    history: list[dict[str, Any]] = []
    try:
        checkpoint = result.checkpoint if result is not None else _latest_checkpoint(spec)
        history = read_history(checkpoint)
        _log_history(client, spec.mlflow_run_id, history)
        with tempfile.TemporaryDirectory() as folder:
            for name, payload in ((HISTORY_FILE, history), ("genotype.json", spec.genotype_json)):
                (Path(folder) / name).write_text(json.dumps(payload, indent=1))
                client.log_artifact(spec.mlflow_run_id, str(Path(folder) / name))
        if error is not None:
            client.set_tag(spec.mlflow_run_id, "ostr.error", (str(error).splitlines() or [repr(error)])[0][:5000])
        status = "FINISHED" if error is None else ("FAILED" if isinstance(error, Exception) else "KILLED")
        client.set_terminated(spec.mlflow_run_id, status=status)
    except Exception as exc:
        if error is None:
            raise
        warnings.warn(f"could not finish MLflow run {spec.mlflow_run_id}: {exc}", stacklevel=2)
    return history


def _latest_checkpoint(spec: RetrainSpec) -> Any:
    """Latest checkpoint folder in the run dir (after a failed fit, to log the epochs that did finish)."""
    from ray.train import Checkpoint

    folders = sorted(p for p in spec.run_dir.glob("checkpoint_*") if (p / HISTORY_FILE).is_file())
    return Checkpoint.from_directory(str(folders[-1])) if folders else None


def resume_retrain(
    run_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    epochs: int | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    tracking_uri: str | None = None,
    on_start: Callable[[RetrainSpec], None] | None = None,
) -> dict[str, Any]:
    """Continue the retrain in ``run_dir`` from its latest checkpoint, logging into the same MLflow run.

    ``epochs`` may extend a finished run (the lr schedule is then computed for the new length from the
    resumed epoch on); the resources may change (a checkpoint holds no per-worker state)."""
    spec = load_spec(run_dir)
    spec.debug = {}
    if epochs is not None:
        spec.config = config_from_dict({**spec.config, "epochs": epochs}).to_dict()
    if workers is not None:
        spec.workers = workers
    if cpus_per_worker is not None:
        spec.cpus_per_worker = cpus_per_worker
    if gpus_per_worker is not None:
        spec.gpus_per_worker = gpus_per_worker
    if tracking_uri is not None:
        spec.tracking_uri = tracking_uri
    if spec.retrain_config().batch_size % spec.workers:
        raise RetrainError(f"batch_size does not split evenly over {spec.workers} workers")
    spec.storage = str(Path(run_dir).expanduser().resolve().parent)
    spec.name = Path(run_dir).expanduser().resolve().name
    return run_retrain(spec, address=address, on_start=on_start)


# ------------------------------------------------------------------------------------------- workers


class ShardedBatchStream(BatchStream):
    """:class:`BatchStream` restricted to one rank's shard of each epoch.

    Every rank draws the same seeded permutation of the whole set for epoch ``e`` (with its augmentation draws,
    position-aligned), truncates it to a multiple of the world size and keeps positions ``rank::world_size``.
    That is exactly what ``DistributedSampler(shuffle=True, drop_last=True)`` + ``set_epoch(e)`` does: the
    shards are disjoint, cover the epoch, are equally long (so every rank takes the same number of DDP
    steps and no all-reduce waits forever) and reshuffle every epoch; a resumed run replays the same shards.
    The data stay uint8 tensors (on the GPU when there is one) and augment batched, as in the search.
    ``randaugment`` applies torchvision's RandAugment per image (uint8, after crop/flip, before cutout).
    """

    def __init__(self, data: Any, batch_size: int, *, rank: int, world_size: int, randaugment: bool = False, **kw: Any):
        if batch_size * world_size > len(data):
            raise DataError(f"per-worker batch {batch_size} x {world_size} workers exceeds {len(data)} images")
        super().__init__(data, batch_size * world_size, **kw)  # the check above replaces the parent's
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.randaugment = None
        if randaugment:
            from torchvision.transforms import v2

            self.randaugment = v2.RandAugment()

    def __len__(self) -> int:
        return (len(self.images) // self.world_size) // self.batch_size

    def _plan(self, epoch: int) -> Any:
        plan = super()._plan(epoch)
        used = (len(self.images) // self.world_size) * self.world_size
        shard = slice(self.rank, used, self.world_size)
        return type(plan)(*(None if t is None else t[shard] for t in plan))

    def _batch(self, plan: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.randaugment is None:
            return super()._batch(plan)
        idx = plan.order
        if plan.offsets is None and plan.flips is None:
            x = self.images[idx]
        else:
            x = self._crop_flip(idx, plan.offsets, plan.flips)
        x = torch.stack([self.randaugment(image) for image in x])
        x = torch.addcmul(-self._shift, x.float(), self._scale)
        if plan.centers is not None:
            x = x.masked_fill_(self._cutout_mask(plan.centers, x.shape[-2], x.shape[-1]), 0.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]


def _seed(*parts: Any) -> int:
    from ostr_ray.data import _seed_from

    return _seed_from(*parts)


def _load_memory_data(loop: dict[str, Any], config: RetrainConfig, train: bool) -> Any:
    from ostr_ray.data import load_images, subset

    data = load_images(
        loop["dataset"],
        data_dir=loop["data_dir"],
        train=train,
        download=config.download,
        image_size=config.image_size,
        num_classes=config.num_classes or 10,
        seed=config.seed,
    )
    cap = config.train_subset if train else config.test_subset
    if cap and cap < len(data):
        data = subset(data, cap, seed=config.seed)
    return data


class _Shard:
    """An evaluation shard: ``rank::world_size`` of the test set, no padding, so the all-reduced counts
    cover every test image exactly once (ranks may hold one image more or less; evaluation runs on the
    unwrapped model, without collectives, so unequal batch counts are fine)."""

    def __init__(self, loop: dict[str, Any], config: RetrainConfig, rank: int, world: int, device: Any, cl: bool):
        self.streaming = loop["dataset"] == "imagenet"
        if self.streaming:
            from ostr_ray.data import make_imagefolder_loader

            self.loader = make_imagefolder_loader(
                loop["data_dir"],
                train=False,
                image_size=config.image_size or 224,
                batch_size=config.eval_batch_size,
                num_workers=_loader_workers(loop, config),
                distributed=True,
                rank=rank,
                world_size=world,
                pin_memory=device.type == "cuda",
            )
            self.total = len(self.loader.dataset)
        else:
            data = _load_memory_data(loop, config, train=False)
            self.total = len(data)
            shard = data.take(torch.arange(rank, len(data), world))
            self.stream = BatchStream(
                shard, config.eval_batch_size, seed=0, device=device, drop_last=False, channels_last=cl
            )
        self.rank, self.world = rank, world

    def batches(self):
        if not self.streaming:
            yield from self.stream.epoch(0)
            return
        # DistributedSampler pads the last round with repeats of the first images; this rank's k-th image
        # sits at padded position rank + k * world, and positions >= len(dataset) are those repeats.
        seen = 0
        for x, y in self.loader:
            positions = self.rank + self.world * torch.arange(seen, seen + len(y))
            seen += len(y)
            keep = positions < self.total
            if keep.any():
                yield x[keep], y[keep]


def _loader_workers(loop: dict[str, Any], config: RetrainConfig) -> int:
    if config.loader_workers is not None:
        return config.loader_workers
    return max(1, int(loop["cpus_per_worker"]) - 1)


def _all_reduce(values: list[float], device: Any) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def _debug_hooks(debug: dict[str, Any], rank: int, epoch: int | None) -> None:
    """Test hooks: write this worker's PID; after epoch ``hold_after_epoch`` wait (<= 120 s) until the test
    creates ``<pid_dir>/release`` (it kills a worker meanwhile)."""
    pid_dir = debug.get("pid_dir")
    if not pid_dir:
        return
    folder = Path(pid_dir)
    if epoch is None:
        (folder / f"worker{rank}.pid").write_text(str(os.getpid()))
        return
    if epoch == debug.get("hold_after_epoch") and not (folder / "release").exists():
        (folder / f"held{rank}").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not (folder / "release").exists() and time.time() < deadline:
            time.sleep(0.1)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: RetrainConfig,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of the protocol: (bf16 autocast) forward, loss + ``auxiliary_weight`` x auxiliary loss,
    backward, gradient clipping, step. Returns the detached loss and logits. Shared with the GPU benchmark."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, aux = model(x)
        loss = criterion(logits, y)
        if aux is not None and config.auxiliary_weight > 0:
            loss = loss + config.auxiliary_weight * criterion(aux, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach(), logits.detach()


def make_optimizer(model: nn.Module, config: RetrainConfig) -> torch.optim.Optimizer:
    """SGD with the protocol's momentum / nesterov / weight decay at the (batch-scaled) peak lr."""
    return torch.optim.SGD(
        model.parameters(),
        lr=effective_lr(config),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def train_loop_per_worker(loop: dict[str, Any]) -> None:
    """One DDP worker: build the net, restore the latest checkpoint, train the remaining epochs.

    Each epoch: set the lr (schedule) and drop-path (``p * epoch / epochs``, DARTS), train on this rank's
    shard (bf16 autocast + channels_last on GPU), evaluate top-1/top-5 on the test shard, all-reduce the
    counts, then every rank calls ``ray.train.report``; rank 0 attaches the checkpoint (model, optimizer,
    scheduler, epoch, and the metrics history of every epoch so far).
    """
    import ray.train
    import ray.train.torch

    from searchspaces import get_space

    config = config_from_dict(loop["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(loop["cpus_per_worker"])))
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    channels_last = on_gpu and config.channels_last
    use_amp = on_gpu and config.amp
    _debug_hooks(loop["debug"], rank, None)

    torch.manual_seed(_seed("retrain-init", config.seed))  # same init everywhere; DDP also broadcasts rank 0's
    space = get_space(loop["space"])
    genotype = space.genotype_from_json(loop["genotype_json"])
    model = build_network(loop["space"], genotype, config, loop["num_classes"])
    peak_lr = effective_lr(config)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))

    start_epoch, history, state = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
            history = json.loads((Path(folder) / HISTORY_FILE).read_text())
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)  # to the device (same Parameter objects) + DDP
    net = model.module if hasattr(model, "module") else model
    if state is not None:  # after the move, so the momentum buffers land on the parameters' device
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    per_worker = config.batch_size // world
    if loop["dataset"] == "imagenet":
        from ostr_ray.data import make_imagefolder_loader

        train_loader = make_imagefolder_loader(
            loop["data_dir"],
            train=True,
            image_size=config.image_size or 224,
            batch_size=per_worker,
            num_workers=_loader_workers(loop, config),
            distributed=True,
            rank=rank,
            world_size=world,
            seed=config.seed,
            pin_memory=on_gpu,
        )
        if config.augment == "randaugment":
            from torchvision.transforms import v2

            transforms = train_loader.dataset.transform.transforms
            transforms.insert(
                transforms.index(next(t for t in transforms if isinstance(t, v2.ToImage))), v2.RandAugment()
            )
        train_stream = None
    else:
        train_data = _load_memory_data(loop, config, train=True)
        train_stream = ShardedBatchStream(
            train_data,
            per_worker,
            rank=rank,
            world_size=world,
            randaugment=config.augment == "randaugment",
            seed=config.seed,
            augment=AugmentSpec(
                random_crop_padding=config.crop_padding, horizontal_flip=config.horizontal_flip, cutout=config.cutout
            ),
            device=device,
            channels_last=channels_last,
        )
    test = _Shard(loop, config, rank, world, device, channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    top_k = min(5, loop["num_classes"])

    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        torch.manual_seed(_seed("retrain-epoch", config.seed, rank, epoch))  # drop-path / RandAugment draws
        # The schedule is a pure function of the epoch (what the LambdaLR holds too); setting it explicitly
        # keeps a resumed run right even when --resume changed the number of epochs.
        lr = peak_lr * lr_factor(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        net.drop_path_prob = config.drop_path_prob * epoch / config.epochs
        model.train()
        if train_stream is not None:
            batches = train_stream.epoch(epoch)
        else:
            train_loader.sampler.set_epoch(epoch)
            batches = train_loader
        # Running sums stay on the device: no host sync per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, logits = train_step(model, x, y, criterion=criterion, optimizer=optimizer, config=config, amp=use_amp)
            loss_sum += loss.double() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        scheduler.step()
        train_time = time.time() - started

        net.eval()
        top1 = top5 = tested = 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            for x, y in test.batches():
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits, _ = net(x)
                best = logits.float().topk(top_k, dim=1).indices
                hits = best == y[:, None]
                top1 += int(hits[:, 0].sum())
                top5 += int(hits.any(dim=1).sum())
                tested += len(y)
        loss_sum, correct, seen, top1, top5, tested = _all_reduce(
            [float(loss_sum), int(correct), seen, top1, top5, tested], device
        )
        metrics = {
            "epoch": epoch + 1,
            "epochs": config.epochs,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": 100.0 * correct / max(seen, 1),
            "test_top1": 100.0 * top1 / max(tested, 1),
            "test_top5": 100.0 * top5 / max(tested, 1),
            "test_images": int(tested),
            "lr": lr,
            "drop_path_prob": net.drop_path_prob if hasattr(net, "drop_path_prob") else 0.0,
            "epoch_seconds": time.time() - started,
            "images_per_s": seen / max(train_time, 1e-9),
            "resumed_from": start_epoch,
            "time": time.time(),
        }
        history.append(metrics)
        if rank == 0:
            print(
                f"epoch {epoch + 1}/{config.epochs}  loss {metrics['train_loss']:.4f}"
                f"  train {metrics['train_acc']:.2f}%"
                f"  top1 {metrics['test_top1']:.2f}%  top5 {metrics['test_top5']:.2f}%  lr {lr:.4g}"
                f"  {metrics['epoch_seconds']:.1f}s",
                flush=True,
            )
            with tempfile.TemporaryDirectory() as folder:
                state = {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                }
                torch.save(state, Path(folder) / STATE_FILE)
                (Path(folder) / HISTORY_FILE).write_text(json.dumps(history))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        _debug_hooks(loop["debug"], rank, epoch + 1)


__all__ = [
    "DataInfo",
    "RetrainConfig",
    "RetrainError",
    "RetrainSpec",
    "ShardedBatchStream",
    "build_network",
    "build_retrain_config",
    "check_cluster",
    "check_data",
    "decode_genotype",
    "list_protocols",
    "load_protocol",
    "load_spec",
    "measure_network",
    "prepare_retrain",
    "read_history",
    "resolve_genotype",
    "resume_retrain",
    "run_retrain",
    "make_optimizer",
    "train_loop_per_worker",
    "train_step",
]
