"""MLflow as a launch's record (the run tree is drawn in :mod:`.schema`): a listener of the launch's
coordinator callback, driven by its events, writing through :mod:`.runs` and :mod:`.trial_runs`.

Why hand-written instead of Ray's ``MLflowLoggerCallback``: that callback logs every trial as a top-level run
(it cannot nest them under a launch), an ``mlflow.set_experiment`` in the driver silently overrides the
experiment it was given, and it never sees the cross-seed statistics, which live in the driver's coordinator.

Run ids survive ``--resume`` and Tune's trial retries (kept in the launch's ``mlflow_runs.json`` and found again
by tags). Every run ends FINISHED, FAILED (with ``ostr.failure_reason``) or KILLED; only a SIGKILLed driver can
leave RUNNING runs, and resuming the launch continues and closes them.

In a launch the coordinator callback puts the recorder in the background (:meth:`LaunchRecorder.run_in_background`):
its hooks then run in order on one thread of their own, so the driver's loop never waits on the store, and a
trial's epoch values wait in a per-run buffer (:class:`~ostr_ray.tracking.runs.BatchingClient`) sent whenever
that thread has caught up, so a backlog costs one ``log_batch`` per run, not one per report. ``finish``,
``abort`` and ``describe`` first wait for it.
"""

from __future__ import annotations

import atexit
import json
import logging
import pickle
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow.entities import Metric, RunTag

from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.core.events import EpochReport
from ostr_ray.experiment import LaunchDir, LaunchReport, LaunchSpec, MlflowRunMap, trial_run_key
from ostr_ray.tracking import plots, schema
from ostr_ray.tracking.runs import RunStore
from ostr_ray.tracking.store import TrackingError, check_tracking_uri, one_line, resolve_tracking_uri
from ostr_ray.tracking.trial_runs import PLOT_EVERY, TrialRuns, trial_key

logger = logging.getLogger(__name__)

PARENT_STATUS = {"finished": "FINISHED", "partial": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
"""A launch's outcome -> its parent run's MLflow status."""


class LaunchRecorder:
    """``start(spec, coordinator)`` before ``Tuner.fit``; the coordinator callback then calls
    ``on_trial_report`` / ``on_epoch_stats`` / ``on_trial_finished``; ``finish(report)`` after, or
    ``abort(exc)`` when the driver is interrupted or fails. Recording errors after ``start`` are logged as
    warnings (kept in :attr:`errors`) and never stop the search."""

    def __init__(
        self, tracking_uri: str, launch_path: str, *, experiment_name: str | None = None, plot_every: int = PLOT_EVERY
    ) -> None:
        self.tracking_uri = tracking_uri
        self.launch = LaunchDir(launch_path)
        self.experiment_name = experiment_name
        self.plot_every = plot_every
        self.store = RunStore(tracking_uri)
        self.client = self.store.client
        self.spec: LaunchSpec | None = None
        self.coordinator: Coordinator | None = None
        self.parent_run_id: str | None = None
        self.trials: TrialRuns | None = None
        self.errors: list[str] = []
        self._parent_open = False
        self._parent_last: dict[str, int] = {}
        self._worker: _Worker | None = None
        self._log_packed = self._log_packed_report  # bound once: every queued report shares this one object

    @classmethod
    def from_spec(cls, spec: LaunchSpec, *, tracking_uri: str | None = None, check: bool = True, **kwargs: Any):
        """The recorder for a launch: URI from ``tracking_uri`` > ``spec.tracking_uri`` > env > default,
        checked with :func:`check_tracking_uri` (call this before Ray starts)."""
        uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri, spec.experiment_path)
        if check:
            check_tracking_uri(uri)
        return cls(uri, spec.experiment_path, **kwargs)

    @property
    def experiment_id(self) -> str | None:
        return self.store.experiment_id

    # -- background -------------------------------------------------------------------------------------
    def run_in_background(self) -> None:
        """From now on the hooks run on the recorder's own thread, in order, with epoch values batched."""
        if self._worker is None:
            self.client.buffering = True
            self._worker = _Worker(lambda: self._guarded_flush())

    def drain(self) -> None:
        """Wait until every hook handed to the background has run and its values are in the store."""
        if self._worker is not None:
            self._worker.drain()

    def _stop_background(self) -> None:
        if self._worker is not None:
            self._worker.drain()
            self._worker.stop()
            self._worker = None
            self.client.buffering = False
            self._guarded_flush()

    def _deferring(self) -> bool:
        """Whether hooks called now go to the background thread (there is one, and this is not it)."""
        return self._worker is not None and threading.current_thread() is not self._worker.thread

    def _defer(self, hook: Any, *args: Any) -> bool:
        """Hand ``hook(*args)`` to the background thread when :meth:`_deferring`."""
        if not self._deferring():
            return False
        self._worker.submit(hook, *args)
        return True

    def _guarded_flush(self) -> None:
        with self._guard("batched epoch values"):
            self.client.flush()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, spec: LaunchSpec, coordinator: Coordinator | None = None) -> None:
        """Find (resume) or create the experiment and the parent run; raises :class:`TrackingError`."""
        self.spec, self.coordinator = spec, coordinator
        try:
            self._open_parent(spec)
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(
                f"cannot record the launch in MLflow at {self.tracking_uri!r}: {one_line(exc)}"
            ) from None
        atexit.register(self._at_exit)

    def _open_parent(self, spec: LaunchSpec) -> None:
        self.store.use_experiment(self.experiment_name or spec.name, self.launch.artifacts_location())
        saved = self._saved_runs()
        parent = self.store.live_run(saved.parent_run_id) or self.store.find_parent(self.launch.path)
        if parent is not None:
            self.parent_run_id = parent.info.run_id
            self.store.reopen(self.parent_run_id)
            self._parent_last = self._logged_stats_epochs(spec)
        else:
            self.parent_run_id = self.store.create_run(spec.name, self._parent_tags(spec), schema.flatten_spec(spec))
        self.trials = TrialRuns(self.store, spec, self.parent_run_id, self._plot, self.plot_every)
        for trial, run_id in saved.children.items():
            variant, _, seed = trial.rpartition("/")
            if self.store.live_run(run_id) is not None:
                self.trials.adopt(TrialKey(variant, int(seed)), run_id)
        self._parent_open = True
        self._save_runs()

    def _parent_tags(self, spec: LaunchSpec) -> dict[str, str]:
        tags = {
            schema.ROLE: schema.ROLE_PARENT,
            schema.LAUNCH_PATH: self.launch.path,
            schema.LAUNCH_NAME: spec.name,
            schema.CRITERION: spec.criterion,
            **schema.version_tags(),
        }
        commit = schema.git_commit()
        if commit:
            tags[schema.GIT_COMMIT] = commit
        return tags

    def finish(self, report: LaunchReport) -> None:
        """Close every child by its trial's final status, then the parent by the launch's outcome: FINISHED
        (finished, partial), FAILED (every trial failed) or KILLED (interrupted); logs report.json and plots."""
        self._stop_background()
        if not self._parent_open:
            return
        seeds = {TrialKey(v, s): info for v, data in report.variants.items() for s, info in data.seeds.items()}
        try:
            for key in sorted(set(self.trials.runs) | set(seeds)):
                with self._guard(f"end of {trial_run_key(*key)}"):
                    info = seeds.get(key)
                    status = info.status if info else "running"
                    run = self.trials.get(key, create=status == "failed")
                    if run is not None and (run.open or self.store.is_running(run.run_id)):
                        self.trials.close(key, run, status, info.reason if info else "", self._history(key))
            with self._guard("the parent's final record"):
                self._finish_parent(report)
        finally:
            with self._guard("end of the launch"):
                status = PARENT_STATUS.get(report.outcome, "FINISHED")
                if status != "FINISHED":
                    tag = schema.STOP_REASON if status == "KILLED" else schema.FAILURE_REASON
                    self.client.set_tag(self.parent_run_id, tag, schema.tag_value(report.stop_reason))
                self._end_parent(status)

    def abort(self, exc: BaseException | str) -> None:
        """The driver is going down: open children KILLED; the parent KILLED on Ctrl-C, FAILED otherwise."""
        self._stop_background()
        if not self._parent_open:
            return
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        reason = "interrupted (Ctrl-C)" if interrupted else one_line(exc) if isinstance(exc, BaseException) else exc
        with self._guard("abort"):
            self.trials.kill_open(f"launch aborted: {reason}")
        with self._guard("abort"):
            status = "KILLED" if interrupted or isinstance(exc, str) else "FAILED"
            tag = schema.STOP_REASON if status == "KILLED" else schema.FAILURE_REASON
            self.client.set_tag(self.parent_run_id, tag, schema.tag_value(reason))
            self._end_parent(status)

    def _at_exit(self) -> None:
        if self._parent_open:
            self.abort("the driver exited before the launch finished")

    def describe(self) -> MlflowRunMap:
        """Where the record is: for report.json, mlflow_runs.json and the CLI's closing lines."""
        if self._worker is not None and threading.current_thread() is not self._worker.thread:
            self.drain()
        children = self.trials.run_ids() if self.trials else {}
        local = not self.launch.is_remote and self.tracking_uri == self.launch.tracking_db_uri()
        return MlflowRunMap(self.tracking_uri, self.experiment_id, self.parent_run_id, children, local)

    # -- listener hooks ------------------------------------------------------------------------------------
    def on_trial_report(self, key: TrialKey, report: EpochReport) -> None:
        if self._deferring():
            # Queued as bytes, not as the report: a backlog of 25,000 reports (1,000 trials whose epochs arrive
            # faster than the store takes them) would otherwise be 200,000 objects that every full garbage
            # collection of the driver walks (0.7 s pauses); bytes and plain tuples are not tracked at all.
            self._worker.submit(self._log_packed, tuple(key), pickle.dumps(report, pickle.HIGHEST_PROTOCOL))
            return
        with self._guard(f"epoch {report.epoch} of {trial_run_key(*key)}"):
            known = trial_key(key) in self.trials.runs
            self.trials.log_epoch(key, report)
            if self.coordinator is not None:  # its journal has every report for the trial's close: hold the newest
                run = self.trials.runs[trial_key(key)]
                run.reports = {e: r for e, r in run.reports.items() if e >= report.epoch}
            if not known:
                self._save_runs()

    def _log_packed_report(self, key: tuple[str, int], packed: bytes) -> None:
        self.on_trial_report(TrialKey(*key), pickle.loads(packed))

    def on_epoch_stats(self, stats: Any) -> None:
        if self._defer(self.on_epoch_stats, stats):
            return
        with self._guard(f"statistics of {stats.variant} epoch {stats.epoch}"):
            if self.parent_run_id is None or stats.epoch <= self._parent_last.get(stats.variant, 0):
                return
            prefix = schema.variant_prefix(stats.variant, len(self.spec.variants))
            values = {name: getattr(stats, name) for name in schema.STATS_METRICS}
            others = {f"agreement_{c}": a for c, a in stats.criterion_agreement.items() if c != stats.criterion}
            now = int(time.time() * 1000)
            metrics = [
                Metric(schema.metric_key(prefix + k), float(v), now, stats.epoch)
                for k, v in {**values, **others}.items()
                if v is not None
            ]
            tags = []
            if stats.consensus_genotype:
                tags.append(RunTag(prefix + schema.CONSENSUS, schema.tag_value(stats.consensus_genotype)))
            self.client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)
            self._parent_last[stats.variant] = stats.epoch

    def on_trial_finished(self, key: TrialKey, status: str, reason: str = "") -> None:
        """A trial ended (coordinator status finished/stopped/failed): final artifacts, terminal status."""
        if self._defer(self.on_trial_finished, key, status, reason):
            return
        with self._guard(f"end of {trial_run_key(*key)}"):
            known = trial_key(key) in self.trials.runs
            run = self.trials.get(key, create=status == "failed")  # a trial failing before its first report
            if run is not None and run.open:
                self.trials.close(trial_key(key), run, status, reason, self._history(key))
            if not known:
                self._save_runs()

    # -- parent --------------------------------------------------------------------------------------------
    def _history(self, key: TrialKey) -> list[EpochReport]:
        """Every epoch's report of the trial: what this driver saw, completed by the coordinator's stored
        reports (a resumed launch whose trial finished before the restart)."""
        run = self.trials.runs.get(trial_key(key))
        seen = dict(run.reports) if run else {}
        if self.coordinator is not None:
            stored = {r.epoch: r for r in self.coordinator.trial_reports(trial_key(key))}
            seen = {**stored, **seen}
        return [seen[e] for e in sorted(seen)]

    def _finish_parent(self, report: LaunchReport) -> None:
        run_id = self.parent_run_id
        n = len(report.variants)
        tags = [RunTag(schema.STOP_REASON, schema.tag_value(report.stop_reason or ""))]
        for variant, data in report.variants.items():
            prefix = schema.variant_prefix(variant, n)
            if data.consensus_genotype:
                tags.append(RunTag(prefix + schema.CONSENSUS, schema.tag_value(data.consensus_genotype)))
            if data.agreement is not None:
                tags.append(RunTag(prefix + schema.AGREEMENT, f"{data.agreement:.4f}"))
        now = int(time.time() * 1000)
        driver_run = len(self.client.get_metric_history(run_id, schema.COST_METRICS[1]))  # 0, then 1 per resume
        costs = {k: getattr(report, k) for k in schema.COST_METRICS}
        metrics = [Metric(k, float(v), now, driver_run) for k, v in costs.items()]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.log_text(run_id, json.dumps(report.to_json(), indent=1, default=str), schema.REPORT_ARTIFACT)
        for variant, data in report.variants.items():
            if data.history:
                self._plot(run_id, schema.agreement_plot(variant), plots.agreement_chart, data.history, variant)
            seeds = {s: info.genotypes.get(report.criterion) for s, info in data.seeds.items()}
            space = self.spec.variants.get(variant, {}).get("space")
            if space and any(seeds.values()):
                self._plot(run_id, schema.seeds_plot(variant), plots.seed_grid, space, seeds, report.criterion)

    def _end_parent(self, status: str) -> None:
        with self._guard("end of a trial's run"):
            self.trials.kill_open("the launch ended before this trial did")
        self.client.set_terminated(self.parent_run_id, status)
        self._parent_open = False
        atexit.unregister(self._at_exit)
        self._save_runs()

    def _logged_stats_epochs(self, spec: LaunchSpec) -> dict[str, int]:
        prefix = {v: schema.variant_prefix(v, len(spec.variants)) for v in spec.variants}
        return {v: self.store.last_step(self.parent_run_id, prefix[v] + schema.AGREEMENT) for v in spec.variants}

    # -- helpers ---------------------------------------------------------------------------------------------
    def _plot(self, run_id: str, artifact_file: str, draw: Any, *args: Any) -> None:
        """Draw with one of :mod:`.plots`' functions and log the PNG; a plotting error costs only the picture."""
        try:
            figure = draw(*args)
        except Exception as exc:
            self._warn(f"plot {artifact_file}", exc)
            return
        self.store.log_figure(run_id, figure, artifact_file)

    def _saved_runs(self) -> MlflowRunMap:
        try:
            saved = self.launch.read_runs()
        except Exception:
            saved = None
        same_store = saved is not None and self.launch.tracking_uri(saved) == self.tracking_uri
        return saved if same_store else MlflowRunMap()

    def _save_runs(self) -> None:
        self.launch.write_runs(self.describe())

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self._warn(what, exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        message = f"MLflow recording failed ({what}): {one_line(exc)}"
        self.errors.append(message)
        logger.warning(message)


class _Worker:
    """One daemon thread running submitted calls in order; ``on_idle`` whenever it has caught up, and every
    :attr:`IDLE_EVERY` calls when it never does (a buffer must not grow for the whole launch)."""

    IDLE_EVERY = 2000

    def __init__(self, on_idle: Any) -> None:
        self.on_idle = on_idle
        self.since_idle = 0
        self.tasks: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="ostr-ray-mlflow", daemon=True)
        self.thread.start()

    def submit(self, fn: Any, *args: Any) -> None:
        self.tasks.put((fn, args))

    def drain(self) -> None:
        self.tasks.join()

    def stop(self) -> None:
        self.tasks.put(None)
        self.thread.join()

    def _run(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                if task is None:
                    return
                fn, args = task
                fn(*args)  # the recorder's hooks guard themselves
                self.since_idle += 1
                if self.tasks.empty() or self.since_idle >= self.IDLE_EVERY:
                    self.on_idle()
                    self.since_idle = 0
            finally:
                self.tasks.task_done()
