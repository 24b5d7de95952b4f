"""Inside a Ray Tune trial: one seed's search, or a group of seeds searched as one batched model
(``--seeds-per-trial K``, :class:`~ostr_ray.core.batched.SeedGroupSearcher`), resumed from Tune's checkpoint
after a retry or restore.

Each epoch's reports (one per seed) and the checkpoint reach Tune in one ``tune.report`` call; the driver's
coordinator callback reads the reports back from the result (:func:`reports_in`). When a seed's search ends,
the trial writes the same :class:`~ostr_ray.experiment.SearchRecord` that ``ostr-ray search`` writes, into that
seed's folder of the experiment.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.core.config import ConfigError, config_from_dict
from ostr_ray.core.events import EpochReport
from ostr_ray.experiment import LaunchDir, SearchRecord
from ostr_ray.experiment.layout import WORKER_PID

# result keys a trial reports besides EpochReport.scalars()
REPORTS_KEY = "ostr_reports"
"""JSON list of epoch reports: epochs a retried trial already sent (backfill) first, then this epoch's."""
STOP_KEY = "ostr_stop"
FAILED_KEY = "ostr_failed"
"""A failure of the whole trial (its data, settings or table): every seed of it failed."""
FAILED_SEEDS_KEY = "ostr_failed_seeds"
"""seed -> why, for seeds of a group that diverged while the others go on."""


def trial_seeds(trial: dict[str, Any]) -> list[int]:
    return [int(s) for s in trial.get("seeds") or [trial["seed"]]]


def search_trial(params: dict[str, Any]) -> None:
    """The Tune trainable (params: ``{"trial": one of LaunchSpec.trial_configs()}``)."""
    import torch

    from ostr_ray.core.nb201_bench import NB201TableError
    from ostr_ray.core.search import SearchError
    from ostr_ray.data import DataError

    trial = params["trial"]
    config = config_from_dict(trial["search"])
    torch.set_num_threads(config.threads or 1)
    work = Path(tune.get_context().get_trial_dir()) / "search"
    work.mkdir(parents=True, exist_ok=True)
    launch = LaunchDir(trial["experiment_path"]) if trial.get("experiment_path") else None
    _write_worker_pid(launch, trial)
    _restore(work)
    run = _run_group if len(trial_seeds(trial)) > 1 else _run_single
    try:
        results = run(config, trial_seeds(trial), work)
    except (SearchError, DataError, NB201TableError, ConfigError) as exc:
        # Deterministic failures: a retry would fail the same way, so end the trial and say why.
        tune.report({FAILED_KEY: str(exc)})
        return
    if launch is not None:
        for seed, result in results.items():
            record = SearchRecord({**config.to_dict(), "seed": seed}, result)
            launch.write_search_record(trial["variant"], seed, record)


def _restore(work: Path) -> None:
    """Tune's latest checkpoint of this trial (after a retry or restore) back into the work folder."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as restored:
        shutil.copytree(restored, work, dirs_exist_ok=True)


def _run_single(config: Any, seeds: list[int], work: Path) -> dict[int, Any]:
    from ostr_ray.core.checkpoint import CHECKPOINT_NAME
    from ostr_ray.core.search import Searcher

    reporter = TuneReporter(work)
    if (work / CHECKPOINT_NAME).is_file():
        searcher = Searcher.resume(work, config=config, out_dir=work, callbacks=[reporter])
        reporter.pending = list(searcher.history)  # the epochs a retried trial already reported
    else:
        searcher = Searcher(config, out_dir=work, callbacks=[reporter])
    return {config.seed: searcher.run()}


def _run_group(config: Any, seeds: list[int], work: Path) -> dict[int, Any]:
    """K seeds as one batched model; one report per epoch with every seed's epoch report in it."""
    from ostr_ray.core.batched import SeedGroupSearcher

    group = SeedGroupSearcher.from_seeds(config, seeds, out_dirs=[work / f"seed{s}" for s in seeds], resume=True)
    pending = [report for member in group.members for report in member.history]
    told: set[int] = set()
    while group.active:
        reports = group.run_epoch()
        failed = {s: f.error for s, f in group.result.failures.items() if s not in told}
        told |= failed.keys()
        metrics: dict[str, Any] = {"epoch": max((r.epoch for r in reports), default=0), **_reports(pending + reports)}
        if failed:
            metrics[FAILED_SEEDS_KEY] = json.dumps(failed)
        pending = []
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))
    return group.result.results


def _reports(reports: list[EpochReport]) -> dict[str, str]:
    return {REPORTS_KEY: json.dumps([r.to_json() for r in reports])} if reports else {}


def _write_worker_pid(launch: LaunchDir | None, trial: dict[str, Any]) -> None:
    """``<experiment>/<variant>-seed<k>/worker.pid``: which process runs each seed now (operators, fault tests).

    Written straight into the experiment storage when it is a local or shared path: the trial's own
    directory is a staging copy that Tune only syncs there later.
    """
    if launch is None or launch.is_remote:
        return
    for seed in trial_seeds(trial):
        launch.trial(trial["variant"], seed).write_text(WORKER_PID, str(os.getpid()))


class TuneReporter:
    """Search callback inside a single-seed trial: each epoch's report and checkpoint go to Tune in one call."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.pending: list[EpochReport] = []

    def on_epoch_end(self, report: EpochReport, checkpoint_path: str | None) -> None:
        metrics: dict[str, Any] = {**report.scalars(), "epoch": report.epoch, **_reports([*self.pending, report])}
        self.pending = []
        if report.stop_reason:
            metrics[STOP_KEY] = report.stop_reason
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.work)))


def reports_in(result: dict[str, Any]) -> list[EpochReport]:
    """The epoch reports a trial's result carries (re-sent ones after a retry first, then this epoch's)."""
    return [EpochReport.from_json(r) for r in json.loads(result.get(REPORTS_KEY, "[]"))]


def failed_seeds_in(result: dict[str, Any]) -> dict[int, str]:
    return {int(seed): why for seed, why in json.loads(result.get(FAILED_SEEDS_KEY, "{}")).items()}
