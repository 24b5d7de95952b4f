"""Inside a Ray Tune trial: the search of one seed, or of a group of seeds searched as one batched model
(``--seeds-per-trial K``), through the one loop :class:`~ostr_ray.core.search.SeedGroupSearcher` (one seed is a
group of one), resumed from Tune's checkpoint after a retry or restore.

Each epoch's reports (one per seed of the trial) and the checkpoint reach Tune in one ``tune.report`` call;
the driver's coordinator callback reads the reports back from the result (:func:`reports_in`). When a seed's
search ends, the trial writes the same :class:`~ostr_ray.experiment.SearchRecord` that ``ostr-ray search``
writes, into that seed's folder of the experiment, before it reports the epoch that ended it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.core.config import ConfigError, SearchConfig, config_from_dict
from ostr_ray.core.events import EpochReport
from ostr_ray.experiment import LaunchDir, SearchRecord
from ostr_ray.experiment.layout import TRIAL_WORK, WORKER_PID, seed_work_dirs

# result keys a trial reports besides EpochReport.scalars()
REPORTS_KEY = "ostr_reports"
"""JSON list of epoch reports: epochs a retried trial already sent (backfill) first, then this epoch's."""
STOP_KEY = "ostr_stop"
"""Every seed of the trial has ended (Algorithm 1 or the schedule): why, per seed."""
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
    work = Path(tune.get_context().get_trial_dir()) / TRIAL_WORK
    work.mkdir(parents=True, exist_ok=True)
    launch = LaunchDir(trial["experiment_path"]) if trial.get("experiment_path") else None
    _write_worker_pid(launch, trial)
    _restore(work)
    try:
        guard_device_memory(config, trial_seeds(trial), _gpu_share())
        _search(config, trial, work, launch)
    except (SearchError, DataError, NB201TableError, ConfigError) as exc:
        # Deterministic failures: a retry would fail the same way, so end the trial and say why.
        tune.report({FAILED_KEY: str(exc)})


def guard_device_memory(
    config: SearchConfig, seeds: list[int], gpu_share: float, *, capacity_bytes: int | None = None
) -> None:
    """Refuse, before any data is read, a search whose supernets (one per seed) do not fit the trial's GPU
    (:func:`~ostr_ray.core.memory.check_device_memory`; a ``ConfigError``, so the trial fails without retries).

    The capacity is what the GPU has free, capped at the trial's share of it (``--gpus-per-trial 0.25``: trials
    that start together each see the whole card free). ``capacity_bytes`` injects it (tests, on CPU). A CPU
    trial's host memory is reserved by Ray from the driver's pre-flight estimate instead.
    """
    import torch

    from ostr_ray.core.memory import check_device_memory
    from ostr_ray.core.placement import resolve_device

    device = resolve_device(config)
    if capacity_bytes is None:
        if device.type != "cuda":
            return
        free, total = torch.cuda.mem_get_info(device)
        capacity_bytes = min(free, int(total * gpu_share)) if 0 < gpu_share < 1 else free
    check_device_memory(config, device, capacity_bytes, seeds=len(seeds))


def _gpu_share() -> float:
    """The GPUs Tune gave this trial (a fraction when trials share one)."""
    resources = tune.get_context().get_trial_resources()
    return float(getattr(resources, "required_resources", {}).get("GPU", 0.0))


def _restore(work: Path) -> None:
    """Tune's latest checkpoint of this trial (after a retry or restore) back into the work folder."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as restored:
        shutil.copytree(restored, work, dirs_exist_ok=True)


def _search(config: SearchConfig, trial: dict[str, Any], work: Path, launch: LaunchDir | None) -> None:
    """The trial's seeds through the one search loop; one Tune report per epoch with every seed's report.

    A retried trial resumes each seed from its checkpoint and re-sends the epochs it had reported, first
    (the driver drops what it already has). A seed's search record is written when the seed ends, so a
    finished seed is recorded even if the trial is stopped right after its last report.
    """
    from ostr_ray.core.search import SeedGroupSearcher

    seeds = trial_seeds(trial)
    group = SeedGroupSearcher.from_seeds(config, seeds, out_dirs=seed_work_dirs(work, seeds), resume=True)
    pending = [report for member in group.members for report in member.history]
    recorded: set[int] = set()
    told: set[int] = set()
    while True:
        reports = group.run_epoch() if group.active else []
        recorded |= _record_ended(launch, trial["variant"], config, group.result.results, recorded)
        failed = {s: f.error for s, f in group.result.failures.items() if s not in told}
        told |= failed.keys()
        metrics = _metrics(pending + reports, failed)
        if not group.active:
            metrics[STOP_KEY] = "; ".join(f"seed {s}: {r.stop_reason}" for s, r in group.result.results.items())
        if reports or pending or failed:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))
        pending = []
        if not group.active:
            return


def _record_ended(
    launch: LaunchDir | None, variant: str, config: SearchConfig, results: dict[int, Any], recorded: set[int]
) -> set[int]:
    """Write the search record of each seed that ended since the last call; the seeds written."""
    new = set(results) - recorded
    if launch is not None:
        for seed in sorted(new):
            record = SearchRecord({**config.to_dict(), "seed": seed}, results[seed])
            launch.write_search_record(variant, seed, record)
    return new


def _metrics(reports: list[EpochReport], failed: dict[int, str]) -> dict[str, Any]:
    """A trial's Tune result: the epoch, every seed's scalars under ``seed<k>/``, the reports, the failures."""
    metrics: dict[str, Any] = {"epoch": max((r.epoch for r in reports), default=0), **_reports(reports)}
    for report in reports:
        metrics.update({f"seed{report.seed}/{key}": value for key, value in report.scalars().items()})
    if failed:
        metrics[FAILED_SEEDS_KEY] = json.dumps(failed)
    return metrics


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


def reports_in(result: dict[str, Any]) -> list[EpochReport]:
    """The epoch reports a trial's result carries (re-sent ones after a retry first, then this epoch's)."""
    return [EpochReport.from_json(r) for r in json.loads(result.get(REPORTS_KEY, "[]"))]


def failed_seeds_in(result: dict[str, Any]) -> dict[int, str]:
    return {int(seed): why for seed, why in json.loads(result.get(FAILED_SEEDS_KEY, "{}")).items()}
