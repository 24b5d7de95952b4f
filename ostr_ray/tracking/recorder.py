"""MLflow as the launch's record: one parent run per launch, one child run per (variant, seed) trial.

Run tree (see :class:`LaunchRecorder`)::

    experiment  <launch name>            (artifacts under <experiment dir>/mlartifacts for a local store)
    └── parent run  <launch name>        params: the resolved LaunchSpec + every variant's config
        │   metrics per epoch: agreement, consensus_stable_for, mean_kendall_tau (+ other criteria's agreement)
        │   tags: versions, git commit, ostr.launch_path, consensus_genotype, agreement, ostr.stop_reason
        │   artifacts: report.json, plots/agreement_<variant>.png, plots/seeds_<variant>.png
        ├── child run  <variant>-seed<k>  tag mlflow.parentRunId; params: seed, variant, preset, search config
        │       metrics per epoch (step = epoch): EpochReport.scalars()
        │       tags: genotype.<criterion> (current, then final), ostr.failure_reason when FAILED
        │       artifacts: genotypes.json, history.json (one entry per epoch: genotypes + alpha/beta/strength
        │                  matrices), plots/heatmaps_epoch_<NNN>.png, plots/cells.png
        └── ...

Why hand-written instead of Ray's ``MLflowLoggerCallback``: that callback logs every trial as a top-level run
(it cannot nest them under a launch), an ``mlflow.set_experiment`` in the driver silently overrides the
experiment it was given, and it never sees the cross-seed statistics, which live in the driver's coordinator.
So the driver records through an explicit :class:`mlflow.MlflowClient` with an explicit tracking URI: never
the fluent API's global active run, never an implicit ``./mlruns`` (MLflow 3 refuses the plain file store
unless allowed, and a stray ``./mlruns`` in the working directory changes MLflow's default URI).

Run ids survive ``--resume`` and Tune's trial retries: they are kept in ``mlflow_runs.json`` in the experiment
directory, and runs are also found again by their tags (``ostr.launch_path``/``ostr.role`` for the parent,
``mlflow.parentRunId`` + ``ostr.trial`` for a child), so a re-reported epoch or a retried trial never makes a
second run or a second metric value for an epoch. Every run ends FINISHED, FAILED (with
``ostr.failure_reason``) or KILLED; only a SIGKILLed driver can leave RUNNING runs, and resuming the launch
continues and closes them.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from ostr_ray.core.coordinator import TrialKey
from ostr_ray.core.events import EpochReport

logger = logging.getLogger(__name__)

TRACKING_DB = "mlflow.db"
RUNS_FILE = "mlflow_runs.json"
ARTIFACTS_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "ostr-ray"
PLOT_EVERY = 5
CHECK_TIMEOUT_S = 5
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
_BATCH = 100  # MLflow's limit of params + tags per log_batch
_HTTP_SCHEMES = ("http", "https", "databricks", "databricks-uc")


class TrackingError(ValueError):
    """The MLflow tracking store is unusable; one line naming the URI, raised before any trial starts."""


# ---------------------------------------------------------------------------------------------- the URI
def default_tracking_uri(experiment_path: str) -> str:
    """``sqlite:///<experiment dir>/mlflow.db``: the launch's own store, beside its checkpoints."""
    if "://" in experiment_path:
        raise TrackingError(
            f"storage {experiment_path!r} is remote, so the launch has no local MLflow database: give "
            "--tracking-uri http://<mlflow server> (or set MLFLOW_TRACKING_URI)"
        )
    return f"sqlite:///{Path(experiment_path).resolve() / TRACKING_DB}"


def resolve_tracking_uri(flag: str | None, experiment_path: str) -> str:
    """``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > the launch's own SQLite database."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(experiment_path)


def _is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in _HTTP_SCHEMES


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet_mlflow() -> None:
    """A new SQLite store logs its schema migrations at INFO; the launch's live view has no room for it."""
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_tracking_uri(uri: str, timeout: int = CHECK_TIMEOUT_S) -> None:
    """One cheap real call against the store; :class:`TrackingError` (one line naming ``uri``) if it fails.

    HTTP stores are asked with a short timeout and no retries (MLflow's defaults retry for minutes), so an
    unreachable server fails the launch in seconds, before Ray starts. A SQLite store is created here.
    """
    _quiet_mlflow()
    settings = {}
    if _is_remote(uri):
        settings = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    try:
        with _environ(**settings):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        if _is_remote(uri):
            cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
            timed_out = "timed out" in str(exc).lower() or "timeout" in str(exc).lower()
            why = cause.group(1).strip() if cause else f"no answer within {timeout} s" if timed_out else _one_line(exc)
            raise TrackingError(f"cannot reach the MLflow server at --tracking-uri {uri!r}: {why}") from None
        why = _one_line(exc)
        if urlparse(uri).scheme in ("", "file") and "filesystem tracking backend" in str(exc):
            why = "MLflow 3 refuses the plain file store; use sqlite:///<path>/mlflow.db or an http(s) server"
        raise TrackingError(f"cannot use MLflow tracking URI {uri!r}: {why}") from None


# ---------------------------------------------------------------------------------------------- params
def _param_value(value: Any, limit: int = MAX_PARAM_VALUE) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 14] + "...[truncated]"


def flatten_spec(spec: Any) -> dict[str, str]:
    """The launch's full resolved config as MLflow params: spec fields, ``<variant>.<key>`` per variant
    config value, ``extra.<key>``; values as JSON text cut to MLflow's 6000 characters."""
    data = asdict(spec)
    variants = data.pop("variants", {})
    extra = data.pop("extra", {}) or {}
    out = {key: _param_value(value) for key, value in data.items()}
    for variant, config in variants.items():
        out.update({f"{variant}.{key}": _param_value(value) for key, value in config.items()})
    out.update({f"extra.{key}": _param_value(value) for key, value in extra.items()})
    return out


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 1] + "…"


def _git_commit() -> str | None:
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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package, tag in (("ostr-ray", "ostr.version"), ("torch", "torch.version"), ("ray", "ray.version")):
        try:
            out[tag] = version(package)
        except PackageNotFoundError:
            out[tag] = "unknown"
    import mlflow

    out["mlflow.version"] = mlflow.__version__
    return out


def _terminal(status: str) -> str:
    """Coordinator trial status -> MLflow run status."""
    return {"finished": "FINISHED", "stopped": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . /`` and spaces; anything else (say, from an NB201 table's
    column names) would fail the whole epoch's batch."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def _trial_name(key: TrialKey) -> str:
    return f"{key.variant}/{key.seed}"


# ---------------------------------------------------------------------------------------------- recorder
@dataclass
class _Child:
    run_id: str
    last_epoch: int = 0
    """Last epoch whose metrics are in the store: re-sent epochs are not logged twice."""
    open: bool = True
    reports: dict[int, EpochReport] = field(default_factory=dict)
    plotted: set[int] = field(default_factory=set)


class LaunchRecorder:
    """A launch listener writing the run tree described in the module docstring.

    ``start(spec, coordinator)`` before ``Tuner.fit``; the coordinator callback then calls
    ``on_trial_report`` / ``on_epoch_stats`` / ``on_trial_finished``; ``finish(report)`` after, or
    ``abort(exc)`` when the driver is interrupted or fails. Recording errors after ``start`` are logged as
    warnings (kept in :attr:`errors`) and never stop the search.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_path: str,
        *,
        experiment_name: str | None = None,
        plot_every: int = PLOT_EVERY,
    ) -> None:
        _quiet_mlflow()
        self.tracking_uri = tracking_uri
        self.experiment_path = experiment_path
        self.experiment_name = experiment_name
        self.plot_every = plot_every
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.spec: Any = None
        self.coordinator: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.children: dict[TrialKey, _Child] = {}
        self.errors: list[str] = []
        self._parent_open = False
        self._parent_last: dict[str, int] = {}
        self._atexit_registered = False

    @classmethod
    def from_spec(cls, spec: Any, *, tracking_uri: str | None = None, check: bool = True, **kwargs: Any):
        """The recorder for a launch: URI from ``tracking_uri`` > ``spec.tracking_uri`` > env > default,
        checked with :func:`check_tracking_uri` (call this before Ray starts)."""
        uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri, spec.experiment_path)
        if check:
            check_tracking_uri(uri)
        return cls(uri, spec.experiment_path, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self, spec: Any, coordinator: Any = None) -> None:
        """Find (resume) or create the experiment and the parent run; raises :class:`TrackingError`."""
        self.spec, self.coordinator = spec, coordinator
        try:
            self._start()
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(
                f"cannot record the launch in MLflow at {self.tracking_uri!r}: {_one_line(exc)}"
            ) from None
        if not self._atexit_registered:
            atexit.register(self._at_exit)
            self._atexit_registered = True

    def _start(self) -> None:
        spec = self.spec
        self.experiment_id = self._experiment(self.experiment_name or spec.name or DEFAULT_EXPERIMENT)
        saved = self._load_runs()
        parent = self._live_run(saved.get("parent_run_id")) or self._find_parent()
        if parent is not None:
            self.parent_run_id = parent.info.run_id
            self._reopen(self.parent_run_id)
            self._parent_last = self._logged_stats_epochs()
            for trial, run_id in saved.get("children", {}).items():
                variant, _, seed = trial.rpartition("/")
                if self._live_run(run_id) is not None:
                    key = TrialKey(variant, int(seed))
                    self.children[key] = _Child(run_id, self._last_step(run_id), open=False)
        else:
            tags = {
                "ostr.role": "parent",
                "ostr.launch_path": self.experiment_path,
                "ostr.launch_name": spec.name,
                "ostr.criterion": spec.criterion,
                **_versions(),
            }
            commit = _git_commit()
            if commit:
                tags["mlflow.source.git.commit"] = commit
            run = self.client.create_run(self.experiment_id, run_name=spec.name, tags=tags)
            self.parent_run_id = run.info.run_id
            self._log_params(self.parent_run_id, flatten_spec(spec))
        self._parent_open = True
        self._save_runs()

    def finish(self, report: dict[str, Any]) -> None:
        """Close every child by its trial's final status, then the parent: FINISHED, or KILLED when trials
        were still running (Tune stopped on a first Ctrl-C); logs report.json and the parent's plots."""
        if not self._parent_open:
            return
        seeds = {
            TrialKey(variant, int(seed)): info
            for variant, data in report.get("variants", {}).items()
            for seed, info in data.get("seeds", {}).items()
        }
        interrupted = any(info.get("status") == "running" for info in seeds.values())
        try:
            for key in sorted(set(self.children) | set(seeds)):
                with self._guard(f"end of {_trial_name(key)}"):
                    status = seeds.get(key, {}).get("status", "running")
                    child = self._child(key, create=status == "failed")
                    if child is not None and (child.open or self._is_running(child.run_id)):
                        self._close_child(key, child, status, seeds.get(key, {}).get("reason", ""))
            with self._guard("the parent's final record"):
                self._finish_parent(report)
        finally:
            with self._guard("end of the launch"):
                if interrupted:
                    reason = "interrupted; continue with ostr-ray launch --resume"
                    self.client.set_tag(self.parent_run_id, "ostr.stop_reason", reason)
                self._end_parent("KILLED" if interrupted else "FINISHED")

    def abort(self, exc: BaseException | str) -> None:
        """The driver is going down: open children KILLED; the parent KILLED on Ctrl-C, FAILED otherwise."""
        if not self._parent_open:
            return
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        reason = "interrupted (Ctrl-C)" if interrupted else _one_line(exc) if isinstance(exc, BaseException) else exc
        for child in self.children.values():
            if child.open:
                with self._guard("abort"):
                    self.client.set_tag(child.run_id, "ostr.failure_reason", _tag_value(f"launch aborted: {reason}"))
                    self.client.set_terminated(child.run_id, "KILLED")
                    child.open = False
        with self._guard("abort"):
            status = "KILLED" if interrupted or isinstance(exc, str) else "FAILED"
            tag = "ostr.stop_reason" if status == "KILLED" else "ostr.failure_reason"
            self.client.set_tag(self.parent_run_id, tag, _tag_value(reason))
            self._end_parent(status)

    def _at_exit(self) -> None:
        if self._parent_open:
            self.abort("the driver exited before the launch finished")

    def describe(self) -> dict[str, Any]:
        """Where the record is: for report.json and the CLI's closing lines."""
        return {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
            "trial_run_ids": {_trial_name(k): c.run_id for k, c in sorted(self.children.items())},
        }

    # -- listener hooks ------------------------------------------------------------------------------------

    def on_trial_report(self, key: TrialKey, report: EpochReport) -> None:
        with self._guard(f"epoch {report.epoch} of {_trial_name(key)}"):
            child = self._child(key, create=True)
            child.reports[report.epoch] = report
            if not child.open:  # a retried or resumed trial reporting again
                self._reopen(child.run_id)
                child.open = True
            if report.epoch <= child.last_epoch:
                return  # re-sent after a retry or restore: already in the store
            now = int(time.time() * 1000)
            metrics = [Metric(_metric_key(k), float(v), now, report.epoch) for k, v in report.scalars().items()]
            tags = [RunTag(f"genotype.{c}", _tag_value(g)) for c, g in report.genotypes.items() if g]
            self.client.log_batch(child.run_id, metrics=metrics, tags=tags)
            child.last_epoch = report.epoch
            if self.plot_every and report.epoch % self.plot_every == 0:
                self._log_heatmaps(child, report)

    def on_epoch_stats(self, stats: Any) -> None:
        with self._guard(f"statistics of {stats.variant} epoch {stats.epoch}"):
            if self.parent_run_id is None or stats.epoch <= self._parent_last.get(stats.variant, 0):
                return
            prefix = self._variant_prefix(stats.variant)
            values = {
                "agreement": stats.agreement,
                "consensus_stable_for": stats.consensus_stable_for,
                "mean_kendall_tau": stats.mean_kendall_tau,
                "n_seeds": stats.n_seeds,
                **{f"agreement_{c}": a for c, a in stats.criterion_agreement.items() if c != stats.criterion},
            }
            now = int(time.time() * 1000)
            metrics = [
                Metric(_metric_key(prefix + k), float(v), now, stats.epoch) for k, v in values.items() if v is not None
            ]
            tags = []
            if stats.consensus_genotype:
                tags.append(RunTag(prefix + "consensus_genotype", _tag_value(stats.consensus_genotype)))
            self.client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)
            self._parent_last[stats.variant] = stats.epoch

    def on_trial_finished(self, key: TrialKey, status: str, reason: str = "") -> None:
        """A trial ended (coordinator status finished/stopped/failed): final artifacts, terminal status."""
        with self._guard(f"end of {_trial_name(key)}"):
            child = self._child(key, create=status == "failed")  # a trial failing before its first report
            if child is not None and child.open:
                self._close_child(key, child, status, reason)

    # -- children ------------------------------------------------------------------------------------------

    def _child(self, key: TrialKey, *, create: bool) -> _Child | None:
        key = TrialKey(str(key[0]), int(key[1]))
        child = self.children.get(key)
        if child is not None:
            return child
        run = self._find_child(key)
        if run is not None:
            child = _Child(run.info.run_id, self._last_step(run.info.run_id), open=False)
        elif create:
            child = _Child(self._create_child(key).info.run_id)
        else:
            return None
        self.children[key] = child
        self._save_runs()
        return child

    def _create_child(self, key: TrialKey) -> Any:
        trial = next(
            (t for t in self.spec.trial_configs() if (t["variant"], t["seed"]) == (key.variant, key.seed)), None
        )
        config = trial["search"] if trial else {}
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "ostr.role": "trial",
            "ostr.trial": _trial_name(key),
            "ostr.variant": key.variant,
            "ostr.seed": str(key.seed),
            "ostr.preset": key.variant,
            "ostr.space": str(config.get("space", "")),
            "ostr.launch_path": self.experiment_path,
        }
        run = self.client.create_run(self.experiment_id, run_name=f"{key.variant}-seed{key.seed}", tags=tags)
        params = {"seed": str(key.seed), "variant": key.variant, "preset": key.variant}
        params.update({f"search.{k}": _param_value(v) for k, v in config.items()})
        self._log_params(run.info.run_id, params)
        return run

    def _close_child(self, key: TrialKey, child: _Child, status: str, reason: str) -> None:
        history = self._history(key, child)
        if history:
            last = history[-1]
            self.client.log_batch(
                child.run_id,
                tags=[RunTag(f"genotype.{c}", _tag_value(g)) for c, g in last.genotypes.items() if g]
                + ([RunTag("ostr.stop_reason", _tag_value(last.stop_reason))] if last.stop_reason else []),
            )
            self.client.log_text(child.run_id, json.dumps(last.genotypes, indent=1), "genotypes.json")
            document = {
                "trial": _trial_name(key),
                "space": last.space,
                "criterion": getattr(self.spec, "criterion", None),
                "epochs": [r.to_json() for r in history],
            }
            self.client.log_text(child.run_id, json.dumps(document), "history.json")
            self._log_heatmaps(child, last)
            self._plot(child.run_id, "plots/cells.png", "cell_figure", last.space, last.genotypes)
        terminal = _terminal(status)
        if terminal != "FINISHED":
            why = reason or ("the launch ended before this trial did" if terminal == "KILLED" else "failed")
            self.client.set_tag(child.run_id, "ostr.failure_reason", _tag_value(why))
        self.client.set_terminated(child.run_id, terminal)
        child.open = False
        child.reports.clear()  # logged; a trial that reports again (a resumed errored one) re-sends them

    def _history(self, key: TrialKey, child: _Child) -> list[EpochReport]:
        """Every epoch's report of the trial: from this driver's memory, or the coordinator's stored reports
        when this driver saw only part of them (a resumed launch whose trial finished before the restart)."""
        epochs = sorted(child.reports)
        if epochs and epochs == list(range(1, epochs[-1] + 1)):
            return [child.reports[e] for e in epochs]
        stored: dict[int, EpochReport] = {}
        if self.coordinator is not None:
            for trial in self.coordinator.state_dict()["trials"]:
                if (trial["variant"], int(trial["seed"])) == tuple(key):
                    stored = {r["epoch"]: EpochReport.from_json(r) for r in trial["reports"]}
        stored.update(child.reports)
        return [stored[e] for e in sorted(stored)]

    def _log_heatmaps(self, child: _Child, report: EpochReport) -> None:
        if report.epoch in child.plotted or not report.alphas:
            return
        self._plot(child.run_id, f"plots/heatmaps_epoch_{report.epoch:03d}.png", "report_heatmaps", report)
        child.plotted.add(report.epoch)

    # -- parent --------------------------------------------------------------------------------------------

    def _variant_prefix(self, variant: str) -> str:
        return "" if self.spec is None or len(self.spec.variants) <= 1 else f"{variant}/"

    def _finish_parent(self, report: dict[str, Any]) -> None:
        run_id = self.parent_run_id
        tags = [RunTag("ostr.stop_reason", _tag_value(report.get("stop_reason") or ""))]
        for variant, data in report.get("variants", {}).items():
            prefix = self._variant_prefix(variant)
            if data.get("consensus_genotype"):
                tags.append(RunTag(prefix + "consensus_genotype", _tag_value(data["consensus_genotype"])))
            if data.get("agreement") is not None:
                tags.append(RunTag(prefix + "agreement", f"{data['agreement']:.4f}"))
        now = int(time.time() * 1000)
        driver_run = len(self.client.get_metric_history(run_id, "wall_seconds_this_run"))  # 0, then 1 per resume
        metrics = [
            Metric(k, float(report[k]), now, driver_run)
            for k in ("search_cost_trial_hours", "wall_seconds_this_run")
            if isinstance(report.get(k), (int, float))
        ]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.log_text(run_id, json.dumps(report, indent=1, default=str), "report.json")
        criterion = report.get("criterion") or getattr(self.spec, "criterion", "")
        for variant, data in report.get("variants", {}).items():
            if data.get("history"):
                self._plot(run_id, f"plots/agreement_{variant}.png", "agreement_chart", data["history"], variant)
            seeds = {s: (info.get("genotypes") or {}).get(criterion) for s, info in data.get("seeds", {}).items()}
            space = (self.spec.variants.get(variant, {}) if self.spec else {}).get("space")
            if space and any(seeds.values()):
                self._plot(run_id, f"plots/seeds_{variant}.png", "seed_grid", space, seeds, criterion)

    def _end_parent(self, status: str) -> None:
        for child in self.children.values():  # nothing may outlive its parent as RUNNING
            if child.open:
                with self._guard("end of a trial's run"):
                    self.client.set_tag(child.run_id, "ostr.failure_reason", "the launch ended before this trial did")
                    self.client.set_terminated(child.run_id, "KILLED")
                    child.open = False
        self.client.set_terminated(self.parent_run_id, status)
        self._parent_open = False
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
            self._atexit_registered = False
        self._save_runs()

    # -- store helpers -------------------------------------------------------------------------------------

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if not _is_remote(self.tracking_uri):
                root = self.experiment_path
                location = f"{root}/{ARTIFACTS_DIR}" if "://" in root else (Path(root) / ARTIFACTS_DIR).as_uri()
            try:
                # The experiment kind tag makes MLflow 3's UI open on the training-runs view (not GenAI traces).
                return self.client.create_experiment(
                    name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"}
                )
            except Exception:  # created meanwhile by another driver
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _live_run(self, run_id: str | None) -> Any:
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return None
        return run

    def _find_parent(self) -> Any:
        path = self.experiment_path.replace("'", "\\'")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`ostr.launch_path` = '{path}' and tags.`ostr.role` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def _find_child(self, key: TrialKey) -> Any:
        trial = _trial_name(key).replace("'", "\\'")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.`ostr.trial` = '{trial}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def _reopen(self, run_id: str) -> None:
        """A run continues (resume, retry): RUNNING again, without the reason it was stopped for."""
        tags = self.client.get_run(run_id).data.tags
        for key in ("ostr.failure_reason", "ostr.stop_reason"):
            if key in tags:
                self.client.delete_tag(run_id, key)
        self.client.update_run(run_id, status="RUNNING")

    def _is_running(self, run_id: str) -> bool:
        return self.client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING)

    def _last_step(self, run_id: str) -> int:
        history = self.client.get_metric_history(run_id, "train_loss")
        return max((int(m.step) for m in history), default=0)

    def _logged_stats_epochs(self) -> dict[str, int]:
        out = {}
        for variant in self.spec.variants:
            history = self.client.get_metric_history(self.parent_run_id, self._variant_prefix(variant) + "agreement")
            out[variant] = max((int(m.step) for m in history), default=0)
        return out

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k[:250], v) for k, v in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[start : start + _BATCH])

    def _plot(self, run_id: str, artifact_file: str, function: str, *args: Any) -> None:
        """Draw with :mod:`ostr_ray.tracking.plots` and log the PNG; a plotting error costs only the picture."""
        from ostr_ray.tracking import plots

        try:
            figure = getattr(plots, function)(*args)
        except Exception as exc:
            self._warn(f"plot {artifact_file}", exc)
            return
        self.client.log_figure(run_id, figure, artifact_file, save_kwargs={"dpi": 100})

    def _load_runs(self) -> dict[str, Any]:
        from ostr_ray.orchestration.launch import read_text

        try:
            saved = json.loads(read_text(self.experiment_path, RUNS_FILE))
        except Exception:
            return {}
        return saved if saved.get("tracking_uri") == self.tracking_uri else {}

    def _save_runs(self) -> None:
        from ostr_ray.orchestration.launch import write_text

        data = {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
            "children": {_trial_name(k): c.run_id for k, c in sorted(self.children.items())},
        }
        write_text(self.experiment_path, RUNS_FILE, json.dumps(data, indent=1))

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self._warn(what, exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        message = f"MLflow recording failed ({what}): {_one_line(exc)}"
        self.errors.append(message)
        logger.warning(message)


def ui_backend_uri(path: str) -> str:
    """The store ``ostr-ray ui PATH`` should open: the launch's recorded URI, else its own SQLite file."""
    from ostr_ray.orchestration.launch import read_text

    try:
        saved = json.loads(read_text(path, RUNS_FILE))
    except Exception:
        saved = {}
    if saved.get("tracking_uri"):
        return saved["tracking_uri"]
    db = Path(path) / TRACKING_DB
    if "://" in path or not db.is_file():
        raise TrackingError(f"no MLflow record in {path!r} (no {RUNS_FILE} or {TRACKING_DB}); is it a launch?")
    return default_tracking_uri(path)


def ui_command(experiment_path: str) -> str:
    return f"ostr-ray ui {experiment_path}"
