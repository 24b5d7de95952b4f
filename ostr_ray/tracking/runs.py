"""The MLflow store operations the launch recorder needs: find or create the experiment and the runs, reopen a
run that continues, read back how far a run got, log params in MLflow-sized batches and figures.

Runs are found again after a restart by their tags (``ostr.launch_path`` + ``ostr.role`` for the parent,
``mlflow.parentRunId`` + ``ostr.trial`` for a child), so a retried trial or a resumed launch never makes a
second run.
"""

from __future__ import annotations

import threading
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag

from ostr_ray.tracking import schema
from ostr_ray.tracking.store import client, is_server


class RunStore:
    """One tracking store and the experiment a launch records into."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = BatchingClient(client(tracking_uri))
        self.experiment_id: str | None = None

    def use_experiment(self, name: str, artifact_location: str | None) -> str:
        """Find (restoring a deleted one) or create the experiment, as a model-training experiment so that
        MLflow 3's UI opens on its runs. ``artifact_location`` applies to local stores only."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None if is_server(self.tracking_uri) else artifact_location
            tags = {schema.EXPERIMENT_KIND: schema.EXPERIMENT_KIND_TRAINING}
            try:
                self.experiment_id = self.client.create_experiment(name, artifact_location=location, tags=tags)
                return self.experiment_id
            except Exception:  # created meanwhile by another driver
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        self.experiment_id = experiment.experiment_id
        return self.experiment_id

    def live_run(self, run_id: str | None) -> Any:
        """The run, if it exists, is not deleted and belongs to this experiment; else None."""
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return None
        return run

    def _search(self, filter_string: str, order: str) -> Any:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=filter_string, order_by=[order], max_results=1
        )
        return runs[0] if runs else None

    def find_parent(self, launch_path: str) -> Any:
        path = launch_path.replace("'", "\\'")
        return self._search(
            f"tags.`{schema.LAUNCH_PATH}` = '{path}' and tags.`{schema.ROLE}` = '{schema.ROLE_PARENT}'",
            "attributes.start_time DESC",
        )

    def find_child(self, parent_run_id: str, trial: str) -> Any:
        trial = trial.replace("'", "\\'")
        return self._search(
            f"tags.`{schema.PARENT_RUN}` = '{parent_run_id}' and tags.`{schema.TRIAL}` = '{trial}'",
            "attributes.start_time ASC",
        )

    def create_run(self, run_name: str, tags: dict[str, str], params: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        """A run continues (resume, retry): RUNNING again, without the reason it was stopped for."""
        tags = self.client.get_run(run_id).data.tags
        for key in (schema.FAILURE_REASON, schema.STOP_REASON):
            if key in tags:
                self.client.delete_tag(run_id, key)
        self.client.update_run(run_id, status="RUNNING")

    def end(self, run_id: str, status: str, reason: str = "") -> None:
        """Terminate a run; a run that did not finish says why in ``ostr.failure_reason``."""
        if status != "FINISHED" and reason:
            self.client.set_tag(run_id, schema.FAILURE_REASON, schema.tag_value(reason))
        self.client.set_terminated(run_id, status)

    def is_running(self, run_id: str) -> bool:
        return self.client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING)

    def last_step(self, run_id: str, metric: str) -> int:
        return max((int(m.step) for m in self.client.get_metric_history(run_id, metric)), default=0)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k[: schema.MAX_PARAM_KEY], v) for k, v in params.items()]
        for start in range(0, len(items), schema.BATCH):
            self.client.log_batch(run_id, params=items[start : start + schema.BATCH])

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file, save_kwargs={"dpi": 100})


def log_files(tracking_uri: str | None, run_id: str, files: list[str], artifact_path: str) -> None:
    """Log local ``files`` as artifacts of ``run_id`` under ``artifact_path`` (e.g. the evidence of a launch)."""
    mlflow_client = client(tracking_uri)
    for file in files:
        mlflow_client.log_artifact(run_id, file, artifact_path=artifact_path)


class BatchingClient:
    """An :class:`mlflow.MlflowClient` whose ``log_batch`` metrics and tags may wait in a buffer per run.

    While :attr:`buffering` (the launch recorder's background mode), a trial's epoch values join its run's buffer
    and :meth:`flush` sends each run's buffer as one or a few ``log_batch`` calls (MLflow's limits: 1000 metrics,
    100 tags), so a backlog of reports costs one call per run, not one per report. Every other call flushes first,
    keeping the store's order (a run's values are in before it is closed or read). :attr:`calls` counts the
    calls that reached the store (the driver benchmark's MLflow calls per report).
    """

    METRICS_PER_CALL = 900
    TAGS_PER_CALL = 100

    def __init__(self, client: Any) -> None:
        self.client = client
        self.buffering = False
        self.calls = 0
        self._metrics: dict[str, list[tuple[str, float, int, int]]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kwargs: Any) -> None:
        if not self.buffering or params or kwargs:
            self.flush()
            self.calls += 1
            self.client.log_batch(run_id, metrics=list(metrics), params=list(params), tags=list(tags), **kwargs)
            return
        # Buffered as plain tuples, not MLflow's entity objects: a backlog of 50,000 reports is ~750,000 values,
        # and tuples of atomic values leave the garbage collector's sight after its first pass, where entity
        # objects would be walked by every full collection (0.5 s each at 1,000 trials: bench_driver.py).
        with self._lock:
            self._metrics.setdefault(run_id, []).extend((m.key, m.value, m.timestamp, m.step) for m in metrics)
            self._tags.setdefault(run_id, {}).update({t.key: t.value for t in tags})  # the newest value of a tag

    def pending(self) -> int:
        """Metrics and tags waiting in the buffer."""
        with self._lock:
            return sum(map(len, self._metrics.values())) + sum(map(len, self._tags.values()))

    def flush(self) -> None:
        """Send every run's buffered values, a few ``log_batch`` calls per run."""
        with self._lock:
            metrics, tags = self._metrics, self._tags
            self._metrics, self._tags = {}, {}
        for run_id in sorted(set(metrics) | set(tags)):
            run_metrics = [Metric(*values) for values in metrics.get(run_id, [])]
            run_tags = [RunTag(key, value) for key, value in tags.get(run_id, {}).items()]
            while run_metrics or run_tags:
                self.calls += 1
                self.client.log_batch(
                    run_id, metrics=run_metrics[: self.METRICS_PER_CALL], tags=run_tags[: self.TAGS_PER_CALL]
                )
                run_metrics, run_tags = run_metrics[self.METRICS_PER_CALL :], run_tags[self.TAGS_PER_CALL :]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.flush()
            self.calls += 1
            return attribute(*args, **kwargs)

        return call
