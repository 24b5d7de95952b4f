"""Inside a Ray Tune trial: one seed's search, resumed from Tune's checkpoint after a retry or restore.

Each epoch's report and checkpoint reach Tune in one ``tune.report`` call (:class:`TuneReporter`, a search
callback); the driver's coordinator callback reads them back from the result. When the search ends, the trial
writes the same :class:`~ostr_ray.experiment.SearchRecord` that ``ostr-ray search`` writes, into its folder of
the experiment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.core.config import ConfigError, config_from_dict
from ostr_ray.core.events import EpochReport
from ostr_ray.experiment import LaunchDir, SearchRecord
from ostr_ray.experiment.layout import CHECKPOINT, WORKER_PID

# result keys a trial reports besides EpochReport.scalars()
REPORT_KEY = "ostr_report"
BACKFILL_KEY = "ostr_backfill"
STOP_KEY = "ostr_stop"
FAILED_KEY = "ostr_failed"


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
    reporter = TuneReporter(work)
    try:
        searcher = _searcher(config, work, reporter)
        result = searcher.run()
    except (SearchError, DataError, NB201TableError, ConfigError) as exc:
        # Deterministic failures: a retry would fail the same way, so end the trial and say why.
        tune.report({FAILED_KEY: str(exc), "epoch": reporter.last_epoch})
        return
    if launch is not None:
        launch.write_search_record(trial["variant"], trial["seed"], SearchRecord(config.to_dict(), result))


def _searcher(config: Any, work: Path, reporter: TuneReporter) -> Any:
    from ostr_ray.core.search import Searcher

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return Searcher(config, out_dir=work, callbacks=[reporter])
    with checkpoint.as_directory() as restored:
        (work / CHECKPOINT).write_bytes((Path(restored) / CHECKPOINT).read_bytes())
    searcher = Searcher.resume(work, config=config, out_dir=work, callbacks=[reporter])
    reporter.backfill = [r.to_json() for r in searcher.history]
    return searcher


def _write_worker_pid(launch: LaunchDir | None, trial: dict[str, Any]) -> None:
    """``<experiment>/<variant>-seed<k>/worker.pid``: which process runs the trial now (operators, fault tests).

    Written straight into the experiment storage when it is a local or shared path: the trial's own
    directory is a staging copy that Tune only syncs there later.
    """
    if launch is None or launch.is_remote:
        return
    launch.trial(trial["variant"], trial["seed"]).write_text(WORKER_PID, str(os.getpid()))


class TuneReporter:
    """Search callback inside a trial: each epoch's report and checkpoint go to Tune in one call."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.backfill: list[dict[str, Any]] | None = None
        self.last_epoch = 0

    def on_epoch_end(self, report: EpochReport, checkpoint_path: str | None) -> None:
        metrics: dict[str, Any] = {**report.scalars(), "epoch": report.epoch, REPORT_KEY: json.dumps(report.to_json())}
        if self.backfill:
            metrics[BACKFILL_KEY] = json.dumps(self.backfill)  # epochs a retried trial already reported
            self.backfill = None
        if report.stop_reason:
            metrics[STOP_KEY] = report.stop_reason
        self.last_epoch = report.epoch
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.work)))


def reports_in(result: dict[str, Any]) -> list[EpochReport]:
    """The epoch reports a trial's result carries: re-sent ones (after a retry) first, then this epoch's."""
    reports = [EpochReport.from_json(r) for r in json.loads(result.get(BACKFILL_KEY, "[]"))]
    if REPORT_KEY in result:
        reports.append(EpochReport.from_json(json.loads(result[REPORT_KEY])))
    return reports
