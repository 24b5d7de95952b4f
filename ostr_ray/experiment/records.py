"""Typed, versioned records of an experiment directory: what each JSON file holds, with to/from JSON.

Every writer and every reader (``status``, ``report``, ``ui``, ``retrain``, the evidence, MLflow) goes through
these classes, so a file's shape is spelled once. Each record carries ``schema`` and ``version``; release 0.1
wrote the same shapes without them, and :func:`_check_version` reads those as version 1 (a fixture of that
release's files is kept under ``tests/fixtures/release-0.1``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from ostr_ray.core.criteria import DEFAULT_CRITERION
from ostr_ray.core.events import EpochReport, SearchResult
from ostr_ray.core.summaries import LaunchSummary
from ostr_ray.experiment.storage import join, resolve

VERSION = 2
"""Version 2: records carry schema/version keys (release 0.1 wrote version 1, without them)."""


class RecordError(ValueError):
    """A file that is not the record it should be (wrong shape, newer version); one line naming the file."""


def _header(schema: str) -> dict[str, Any]:
    return {"schema": f"ostr-ray.{schema}", "version": VERSION}


def _check_version(data: Any, schema: str, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RecordError(f"{where} is not a JSON object (an ostr-ray {schema} record)")
    found = data.get("schema", f"ostr-ray.{schema}")
    if found != f"ostr-ray.{schema}":
        raise RecordError(f"{where} holds a {found!r} record, not ostr-ray.{schema}")
    version = int(data.get("version", 1))
    if version > VERSION:
        raise RecordError(f"{where} was written by a newer ostr-ray (record version {version} > {VERSION})")
    return data


OUTCOMES = ("finished", "partial", "failed", "interrupted")


# ------------------------------------------------------------------------------------------------ launch spec


@dataclass
class LaunchSpec:
    """Everything a launch needs, resolved and validated (``launch.json``, read again on ``--resume``)."""

    variants: dict[str, dict[str, Any]]
    """variant name -> resolved SearchConfig dict (seed filled per trial)."""
    seeds: list[int]
    name: str
    storage: str
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    criterion: str = DEFAULT_CRITERION
    """The criterion the coordinator watches (consensus, agreement, experiment stop)."""
    patience: int = 0
    """The experiment stop's C; each variant's own patience drives its seeds' Algorithm 1."""
    agreement: float = 0.8
    seed_stop: bool = True
    experiment_stop: bool = True
    tracking_uri: str | None = None
    seeds_per_trial: int = 1
    """Seeds searched together as one batched model in one trial (``--seeds-per-trial``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment_path(self) -> str:
        return join(resolve(self.storage), self.name)

    def trial_configs(self) -> list[dict[str, Any]]:
        """One param dict per Tune trial: a variant and its ``seeds`` (groups of ``seeds_per_trial``), the
        first seed's resolved search config, and where the experiment is."""
        threads = max(1, int(self.cpus_per_trial))
        size = max(1, self.seeds_per_trial)
        trials = []
        for variant, base in self.variants.items():
            for start in range(0, len(self.seeds), size):
                seeds = self.seeds[start : start + size]
                search = {**base, "seed": seeds[0]}
                if not self.seed_stop:
                    search["patience"] = 0
                if search.get("threads") is None:
                    search["threads"] = threads
                trials.append(
                    {"variant": variant, "seeds": seeds, "search": search, "experiment_path": self.experiment_path}
                )
        return trials

    def to_json(self) -> dict[str, Any]:
        return {**_header("launch-spec"), **dataclasses.asdict(self)}

    def moved_to(self, experiment_path: str) -> LaunchSpec:
        """This spec for the launch directory now at ``experiment_path`` (moved or copied since)."""
        root, _, name = resolve(experiment_path).rstrip("/").rpartition("/")
        return dataclasses.replace(self, storage=root, name=name)

    @classmethod
    def from_json(cls, data: Any, where: str = "a launch spec") -> LaunchSpec:
        data = _check_version(data, "launch-spec", where)
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise RecordError(f"{where} is not a launch spec: {exc}") from None


# ------------------------------------------------------------------------------------------------ MLflow runs


@dataclass
class MlflowRunMap:
    """Where a launch is recorded in MLflow (``mlflow_runs.json``): store, experiment, parent and trial runs."""

    tracking_uri: str | None = None
    """The store; for the launch's own SQLite store this is where it was written from (see ``local_store``)."""
    experiment_id: str | None = None
    parent_run_id: str | None = None
    children: dict[str, str] = field(default_factory=dict)
    """``"<variant>/<seed>"`` -> the trial's child run id."""
    local_store: bool = False
    """The store is the launch directory's own ``mlflow.db``: readers open it where the directory is now, so a
    launch directory can be moved or copied to another machine."""

    def to_json(self) -> dict[str, Any]:
        return {**_header("mlflow-runs"), **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: str = "an MLflow run map") -> MlflowRunMap:
        data = _check_version(data, "mlflow-runs", where)
        children = data.get("children") or data.get("trial_run_ids") or {}  # the report's name in release 0.1
        uri = data.get("tracking_uri")
        local = bool(data.get("local_store", bool(uri) and uri.startswith("sqlite:") and uri.endswith("/mlflow.db")))
        return cls(uri, data.get("experiment_id"), data.get("parent_run_id"), dict(children), local)


# ------------------------------------------------------------------------------------------------ snapshot / report


@dataclass
class CoordinatorSnapshot(LaunchSummary):
    """The coordinator's summary as of ``updated_at`` (``coordinator.json``, rewritten after every event)."""

    updated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**_header("coordinator-snapshot"), **self.summary_json(), "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, data: Any, where: str = "a coordinator snapshot") -> CoordinatorSnapshot:
        data = _check_version(data, "coordinator-snapshot", where)
        return cls(**_summary_values(data, where), updated_at=data.get("updated_at"))

    @classmethod
    def of(cls, summary: LaunchSummary) -> CoordinatorSnapshot:
        return cls(
            **{f.name: getattr(summary, f.name) for f in dataclasses.fields(LaunchSummary)}, updated_at=time.time()
        )


@dataclass
class LaunchReport(LaunchSummary):
    """A launch's final report (``report.json``): the summary, how it ended, what it cost and where it is
    recorded. Written when the driver ends, also when it was interrupted (``outcome``)."""

    name: str = ""
    outcome: str = "finished"
    """``finished`` (every trial finished or stopped), ``partial`` (some trials failed), ``failed`` (all did),
    ``interrupted`` (Ctrl-C or SIGTERM: ``ostr-ray launch --resume`` continues it)."""
    interrupted_by: str | None = None
    """The signal that interrupted the launch (``SIGINT``, ``SIGTERM``), when it was."""
    failures: dict[str, str] = field(default_factory=dict)
    """``"<variant>/<seed>"`` -> why that trial failed, for every failed trial."""
    experiment_path: str = ""
    stop_reason: str = ""
    launch: LaunchSpec | None = None
    search_cost_trial_hours: float = 0.0
    wall_seconds_this_run: float = 0.0
    ground_truth: dict[str, Any] = field(default_factory=dict)
    """variant -> ``{"seeds": {seed: {criterion: metrics}}, "consensus": metrics, "criterion_consensus": ...}``."""
    mlflow: MlflowRunMap = field(default_factory=MlflowRunMap)

    def to_json(self) -> dict[str, Any]:
        return {
            **_header("launch-report"),
            "name": self.name,
            "outcome": self.outcome,
            "interrupted_by": self.interrupted_by,
            "failures": dict(self.failures),
            "experiment_path": self.experiment_path,
            "stop_reason": self.stop_reason,
            "launch": dataclasses.asdict(self.launch) if self.launch else None,
            "search_cost_trial_hours": self.search_cost_trial_hours,
            "wall_seconds_this_run": self.wall_seconds_this_run,
            **self.summary_json(),
            "ground_truth": self.ground_truth,
            "mlflow": dataclasses.asdict(self.mlflow),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "a launch report") -> LaunchReport:
        data = _check_version(data, "launch-report", where)
        if data.get("outcome", "finished") not in OUTCOMES:
            raise RecordError(f"{where}: unknown outcome {data['outcome']!r}; one of {', '.join(OUTCOMES)}")
        launch = data.get("launch")
        return cls(
            **_summary_values(data, where),
            name=data.get("name") or "",
            outcome=data.get("outcome") or "finished",  # release 0.1 wrote a report only when a fit returned
            interrupted_by=data.get("interrupted_by"),
            failures=dict(data.get("failures") or {}),
            experiment_path=data.get("experiment_path") or "",
            stop_reason=data.get("stop_reason") or "",
            launch=LaunchSpec.from_json(launch, f"{where} (launch)") if launch else None,
            search_cost_trial_hours=float(data.get("search_cost_trial_hours") or 0.0),
            wall_seconds_this_run=float(data.get("wall_seconds_this_run") or 0.0),
            ground_truth=dict(data.get("ground_truth") or {}),
            mlflow=MlflowRunMap.from_json(data.get("mlflow") or {}, f"{where} (mlflow)"),
        )


def _summary_values(data: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return LaunchSummary.summary_values(data)
    except (TypeError, ValueError, AttributeError) as exc:
        raise RecordError(f"{where} does not hold a launch summary: {exc}") from None


# ------------------------------------------------------------------------------------------------ driver


@dataclass
class DriverRecord:
    """Who drives a launch (``driver.json``): written when a driver takes the launch directory, refreshed every
    few seconds while it runs (``heartbeat_at``), and stamped ``ended_at`` when it lets go."""

    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    ended_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**_header("driver"), **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: str = "a driver record") -> DriverRecord:
        data = _check_version(data, "driver", where)
        try:
            return cls(
                str(data["host"]),
                int(data["pid"]),
                float(data["started_at"]),
                float(data["heartbeat_at"]),
                data.get("ended_at"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{where} is not a driver record: {exc}") from None


# ------------------------------------------------------------------------------------------------ search


@dataclass
class SearchRecord:
    """One seed's search (``report.json`` of an ``ostr-ray search`` directory and of every launch trial):
    its settings, how it ended, every criterion's final genotype and the per-epoch reports."""

    config: dict[str, Any]
    result: SearchResult

    def to_json(self) -> dict[str, Any]:
        return {**_header("search"), "config": self.config, **self.result.to_json()}

    @classmethod
    def from_json(cls, data: Any, where: str = "a search record") -> SearchRecord:
        data = _check_version(data, "search", where)
        try:
            result = SearchResult(
                seed=int(data["seed"]),
                space=data["space"],
                epochs_done=int(data["epochs_done"]),
                final_genotypes=dict(data["final_genotypes"]),
                stop_reason=data["stop_reason"],
                history=[EpochReport.from_json(r) for r in data.get("history", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{where} is not a search record: {exc}") from None
        return cls(config=dict(data.get("config") or {}), result=result)
