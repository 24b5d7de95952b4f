"""The experiment directories and every file name in them, spelled once.

A launch directory (``<storage>/<name>``)::

    launch.json          LaunchSpec: what was launched (read again by --resume)
    coordinator.json     CoordinatorSnapshot: the cross-seed summary, rewritten after every event
    history.json         the coordinator's full state: every trial's epoch reports, every epoch's statistics
    report.json          LaunchReport: written when the launch ends
    mlflow_runs.json     MlflowRunMap: where the launch is recorded in MLflow
    driver.json          DriverRecord: which process drives the launch, and its heartbeat
    waiting.json         trials waiting for resources (nodes, GPUs), rewritten when that changes
    .driver.lock         held (an OS file lock) by the driving process for its whole life
    driver-journal/      the driver's past reports and epoch statistics, out of memory (core/journal.py)
    mlflow.db            the launch's own SQLite MLflow store (unless --tracking-uri points elsewhere)
    mlartifacts/         that store's artifacts
    evidence.md, evidence.json, evidence_*.png    written by ``ostr-ray report``
    <variant>-seed<k>/   one trial: Tune's files, worker.pid, and its search's report.json (a SearchRecord)

A search directory (``ostr-ray search --out``): ``checkpoint.pt`` and ``report.json`` (a SearchRecord).

A retrain run directory (``<storage>/<name>``, Ray Train's ``RunConfig(name, storage_path)``)::

    retrain.json         RetrainSpec: everything ``ostr-ray retrain --resume`` needs
    checkpoint_*/        Ray Train's checkpoints (the newest two), each holding
        state.pt         the model, optimizer, schedule and epoch (``torch.save``)
        history.json     every finished epoch's metrics so far (the driver logs them to MLflow)

An evaluation of a launch's cells (``ostr-ray evaluate``; ``<launch>/evaluation``, also Ray Tune's experiment
directory for its runs)::

    evaluate.json        the evaluation's spec: cells (with their selectors), retraining seeds, protocol, MLflow ids
    report.json          its report: outcome, every run's result, per cell top-1 mean and std
    driver.json, .driver.lock    as in a launch directory: one driver at a time
    <cell>-seed<r>/      one run (Tune's trial dir; its checkpoints hold state.pt and history.json)

Storage defaults to :data:`DEFAULT_STORAGE` (relative to the working directory) for launches, searches and retrains.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ostr_ray.core.checkpoint import CHECKPOINT_NAME
from ostr_ray.core.summaries import LaunchSummary
from ostr_ray.experiment.records import (
    CoordinatorSnapshot,
    DriverRecord,
    LaunchReport,
    LaunchSpec,
    MlflowRunMap,
    RecordError,
    SearchRecord,
)
from ostr_ray.experiment.storage import Storage

LAUNCH_SPEC = "launch.json"
SNAPSHOT = "coordinator.json"
HISTORY = "history.json"
REPORT = "report.json"
MLFLOW_RUNS = "mlflow_runs.json"
DRIVER = "driver.json"
WAITING = "waiting.json"
DRIVER_LOCK = ".driver.lock"
DRIVER_JOURNAL = "driver-journal"
"""The driver's journal of past reports (one ``.pkl`` per trial and per variant; core/journal.py); a launch in object
storage keeps it in a local folder and mirrors it here in segments (orchestration/journal_mirror.py)."""
TRACKING_DB = "mlflow.db"
ARTIFACTS = "mlartifacts"
WORKER_PID = "worker.pid"
SEARCH_REPORT = REPORT
CHECKPOINT = CHECKPOINT_NAME
EVIDENCE_MARKDOWN = "evidence.md"
EVIDENCE_JSON = "evidence.json"
EVIDENCE_FIGURES = {
    "accuracy": "evidence_accuracy_by_epoch.png",
    "param_free": "evidence_param_free_ops.png",
    "spearman": "evidence_spearman.png",
}
"""Each evidence figure's key -> its file name in the launch directory."""
RETRAIN_SPEC = "retrain.json"
RETRAIN_CHECKPOINTS = "checkpoint_*"
"""Ray Train's checkpoint folders in a retrain run directory."""
RETRAIN_STATE = "state.pt"
RETRAIN_HISTORY = "history.json"
EVALUATION_DIR = "evaluation"
"""An evaluation's folder inside its launch directory."""
EVALUATION_SPEC = "evaluate.json"
EVALUATION_REPORT = REPORT
EVALUATION_FIGURE = "evidence_evaluation_by_selector.png"
"""The report's figure of the evaluation (retrained top-1 by selector), in the launch directory."""
EVALUATION_VERSION = 1
"""Version of the evaluation's records (``schema: ostr-ray.evaluation-spec`` / ``ostr-ray.evaluation-report``)."""
DEFAULT_STORAGE = "ostr_runs"
"""Where launch, search and retrain directories go unless ``--storage`` (``--out``) says otherwise."""


def trial_dirname(variant: str, seed: int) -> str:
    """The one name of a trial's folder under the experiment (Tune's trial dir, pid file, search record)."""
    return f"{variant}-seed{seed}"


def trial_group_dirname(variant: str, seeds: Sequence[int]) -> str:
    """A Tune trial's folder: its seed's :func:`trial_dirname`, or ``<variant>-seed<first>-<last>`` for a group."""
    name = trial_dirname(variant, seeds[0])
    return name if len(seeds) == 1 else f"{name}-{seeds[-1]}"


def evaluation_run_name(cell: str, seed: int) -> str:
    """One evaluation run's name: its Tune trial folder, its key in the evaluation's records, its MLflow run name."""
    return f"{cell}-seed{seed}"


TRIAL_WORK = "search"
"""The folder inside a Tune trial's own directory where its searches checkpoint (Tune checkpoints it whole)."""


def seed_work_dirs(trial_work: Path, seeds: Sequence[int]) -> list[Path]:
    """Where each seed of a Tune trial keeps its checkpoint inside the trial's :data:`TRIAL_WORK` folder: that
    folder itself for one seed, ``seed<k>/`` in it for each seed of a group."""
    if len(seeds) == 1:
        return [trial_work]
    return [trial_work / f"seed{seed}" for seed in seeds]


def trial_run_key(variant: str, seed: int) -> str:
    """``<variant>/<seed>``: a trial's key in :class:`MlflowRunMap` and its ``ostr.trial`` MLflow tag (its MLflow
    run's *name* is :func:`ostr_ray.tracking.schema.trial_run_name`)."""
    return f"{variant}/{seed}"


class LaunchDirError(ValueError):
    """A path that is not (yet) a launch directory, or a file in it that cannot be read; one line."""


def _load_json(storage: Storage, name: str) -> Any | None:
    text = storage.read_text(name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LaunchDirError(f"{storage.path(name)} is not valid JSON ({exc}); was it cut off?") from None


class LaunchDir:
    """A launch's directory: where each file is, and each record read or written through its class."""

    def __init__(self, path: str | Path) -> None:
        self.storage = Storage(path)
        self.path = self.storage.root

    def __repr__(self) -> str:
        return f"LaunchDir({self.path!r})"

    @property
    def is_remote(self) -> bool:
        return self.storage.is_remote

    def file(self, name: str) -> str:
        return self.storage.path(name)

    def trial(self, variant: str, seed: int) -> Storage:
        return self.storage.child(trial_dirname(variant, seed))

    def is_launch(self) -> bool:
        return self.storage.exists(LAUNCH_SPEC) or self.storage.exists(SNAPSHOT)

    # -- records -------------------------------------------------------------------------------------------
    def _read(self, name: str, parse: Any, *, required: bool) -> Any:
        data = _load_json(self.storage, name)
        if data is None:
            if required:
                raise LaunchDirError(f"no {name} in {self.path}; is it an ostr-ray launch directory?")
            return None
        try:
            return parse(data, self.file(name))
        except RecordError as exc:
            raise LaunchDirError(str(exc)) from None

    def read_spec(self, *, required: bool = True) -> LaunchSpec | None:
        return self._read(LAUNCH_SPEC, LaunchSpec.from_json, required=required)

    def write_spec(self, spec: LaunchSpec) -> None:
        self.storage.write_text(LAUNCH_SPEC, json.dumps(spec.to_json(), indent=1))

    def read_snapshot(self, *, required: bool = True) -> CoordinatorSnapshot | None:
        return self._read(SNAPSHOT, CoordinatorSnapshot.from_json, required=required)

    def write_snapshot(self, summary: LaunchSummary) -> None:
        """Compact JSON: the driver rewrites this file every few seconds, and ``indent`` would switch ``json`` to
        its pure-Python encoder (14 ms instead of 3 for 1,000 DARTS seeds; ``ostr-ray status --json`` indents)."""
        snapshot = CoordinatorSnapshot.of(summary)
        self.storage.write_text(SNAPSHOT, json.dumps(snapshot.to_json(), separators=(",", ":")))

    def read_report(self, *, required: bool = True) -> LaunchReport | None:
        """The report, with ``experiment_path`` where the directory is now (it may have been moved)."""
        report = self._read(REPORT, LaunchReport.from_json, required=required)
        if report is not None:
            report.experiment_path = self.path
        return report

    def write_report(self, report: LaunchReport) -> None:
        self.storage.write_text(REPORT, json.dumps(report.to_json(), indent=1))

    def read_history(self) -> dict[str, Any] | None:
        """The coordinator's state (``Coordinator.from_state`` rebuilds it); None before the launch ended."""
        return _load_json(self.storage, HISTORY)

    def write_history(self, state: dict[str, Any]) -> None:
        self.storage.write_text(HISTORY, json.dumps(state))

    def read_runs(self) -> MlflowRunMap | None:
        return self._read(MLFLOW_RUNS, MlflowRunMap.from_json, required=False)

    def read_driver(self) -> DriverRecord | None:
        return self._read(DRIVER, DriverRecord.from_json, required=False)

    def write_driver(self, driver: DriverRecord) -> None:
        self.storage.write_text(DRIVER, json.dumps(driver.to_json(), indent=1))

    def lock_path(self) -> Path:
        return Path(self.path) / DRIVER_LOCK

    def recorded_path(self) -> str | None:
        """Where the launch was when it was launched (its spec's experiment path); None without a spec."""
        try:
            spec = self.read_spec(required=False)
        except LaunchDirError:
            return None
        return spec.experiment_path if spec else None

    def tracking_uri(self, runs: MlflowRunMap) -> str | None:
        """The store ``runs`` live in, for this directory as it is now (its own mlflow.db wherever it moved)."""
        return self.tracking_db_uri() if runs.local_store and not self.is_remote else runs.tracking_uri

    def write_runs(self, runs: MlflowRunMap) -> None:
        self.storage.write_text(MLFLOW_RUNS, json.dumps(runs.to_json(), indent=1))

    def write_search_record(self, variant: str, seed: int, record: SearchRecord) -> None:
        SearchDir(self.trial(variant, seed).root).write_record(record)

    # -- the local MLflow store ------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.storage.exists()

    def tracking_db_uri(self) -> str:
        if self.is_remote:
            raise LaunchDirError(f"{self.path} is remote storage: it has no local MLflow database")
        return f"sqlite:///{Path(self.path) / TRACKING_DB}"

    def has_tracking_db(self) -> bool:
        return not self.is_remote and (Path(self.path) / TRACKING_DB).is_file()

    def artifacts_location(self) -> str:
        return self.file(ARTIFACTS) if self.is_remote else (Path(self.path) / ARTIFACTS).as_uri()


class SearchDir:
    """One seed's search directory: its checkpoint and its :class:`SearchRecord`."""

    def __init__(self, path: str | Path) -> None:
        self.storage = Storage(path)
        self.path = self.storage.root

    @property
    def checkpoint(self) -> Path:
        return Path(self.path) / CHECKPOINT

    def has_record(self) -> bool:
        return self.storage.exists(SEARCH_REPORT)

    def read_record(self) -> SearchRecord:
        data = _load_json(self.storage, SEARCH_REPORT)
        if data is None:
            raise LaunchDirError(f"no {SEARCH_REPORT} in {self.path}; is it an ostr-ray search directory?")
        try:
            return SearchRecord.from_json(data, self.storage.path(SEARCH_REPORT))
        except RecordError as exc:
            raise LaunchDirError(str(exc)) from None

    def write_record(self, record: SearchRecord) -> str:
        return self.storage.write_text(SEARCH_REPORT, json.dumps(record.to_json(), indent=1))


class RetrainCheckpoint:
    """One retrain checkpoint folder (Ray Train's, or the worker's before it hands it over): the training state
    and the metrics history of every epoch up to it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def state(self) -> Path:
        return self.folder / RETRAIN_STATE

    @property
    def history_file(self) -> Path:
        return self.folder / RETRAIN_HISTORY

    def is_complete(self) -> bool:
        """The history is written after the state, so a folder holding it holds both."""
        return self.history_file.is_file()

    def read_history(self) -> list[dict[str, Any]]:
        """Every epoch's metrics up to this checkpoint; empty when there is no history."""
        return json.loads(self.history_file.read_text()) if self.is_complete() else []

    def write_history(self, history: list[dict[str, Any]]) -> None:
        self.history_file.write_text(json.dumps(history))


class RetrainDir:
    """A retrain's run directory: its spec and Ray Train's checkpoints (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RetrainDir({str(self.path)!r})"

    @property
    def spec_file(self) -> Path:
        return self.path / RETRAIN_SPEC

    def latest_checkpoint(self) -> RetrainCheckpoint | None:
        """The newest complete checkpoint (after a failed fit: the epochs that did finish); None if none."""
        folders = sorted(p for p in self.path.glob(RETRAIN_CHECKPOINTS) if RetrainCheckpoint(p).is_complete())
        return RetrainCheckpoint(folders[-1]) if folders else None


class EvaluationDir:
    """An evaluation's directory inside a launch (see the module docstring): its spec, its report, and the driver
    record and lock that :class:`ostr_ray.orchestration.ownership.DriverLock` holds (the same shape as a
    :class:`LaunchDir`'s). Records are JSON objects tagged with their schema and version."""

    def __init__(self, launch_path: str | Path) -> None:
        self.launch_path = str(Path(launch_path).expanduser().resolve())
        self.path = str(Path(self.launch_path) / EVALUATION_DIR)
        self.storage = Storage(self.path)

    def __repr__(self) -> str:
        return f"EvaluationDir({self.path!r})"

    is_remote = False
    """Evaluations run from a local (or mounted) launch directory."""

    def exists(self) -> bool:
        return self.storage.exists(EVALUATION_SPEC)

    def _read(self, name: str, schema: str, required: bool) -> dict[str, Any] | None:
        data = _load_json(self.storage, name)
        if data is None:
            if required:
                raise LaunchDirError(f"no {name} in {self.path}; has this launch been evaluated?")
            return None
        if not isinstance(data, dict) or data.get("schema") != f"ostr-ray.{schema}":
            raise LaunchDirError(f"{self.storage.path(name)} is not an ostr-ray {schema} record")
        if int(data.get("version", 1)) > EVALUATION_VERSION:
            raise LaunchDirError(f"{self.storage.path(name)} was written by a newer ostr-ray")
        return data

    def _write(self, name: str, schema: str, data: dict[str, Any]) -> None:
        header = {"schema": f"ostr-ray.{schema}", "version": EVALUATION_VERSION}
        self.storage.write_text(name, json.dumps({**header, **data}, indent=1))

    def read_spec(self, *, required: bool = True) -> dict[str, Any] | None:
        return self._read(EVALUATION_SPEC, "evaluation-spec", required)

    def write_spec(self, data: dict[str, Any]) -> None:
        self._write(EVALUATION_SPEC, "evaluation-spec", data)

    def read_report(self, *, required: bool = True) -> dict[str, Any] | None:
        return self._read(EVALUATION_REPORT, "evaluation-report", required)

    def write_report(self, data: dict[str, Any]) -> None:
        self._write(EVALUATION_REPORT, "evaluation-report", data)

    def read_driver(self) -> DriverRecord | None:
        data = _load_json(self.storage, DRIVER)
        try:
            return None if data is None else DriverRecord.from_json(data, self.storage.path(DRIVER))
        except RecordError as exc:
            raise LaunchDirError(str(exc)) from None

    def write_driver(self, driver: DriverRecord) -> None:
        self.storage.write_text(DRIVER, json.dumps(driver.to_json(), indent=1))

    def lock_path(self) -> Path:
        return Path(self.path) / DRIVER_LOCK

    def run_dir(self, cell: str, seed: int) -> Path:
        return Path(self.path) / evaluation_run_name(cell, seed)

    def run_history(self, cell: str, seed: int) -> list[dict[str, Any]]:
        """The metrics of every epoch one run has checkpointed so far (its newest complete checkpoint's
        history; Tune's ``checkpoint_<n>`` folders are zero-padded, so the last in name order is the newest)."""
        found = [RetrainCheckpoint(f) for f in sorted(self.run_dir(cell, seed).glob(RETRAIN_CHECKPOINTS))]
        complete = [c for c in found if c.is_complete()]
        return complete[-1].read_history() if complete else []
