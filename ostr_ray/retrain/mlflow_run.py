"""MLflow for retraining: the client (also used to read genotypes from search runs) and the retrain's run,
written from the driver only (the workers need no tracking credentials): the tracking URI, the run (linked to
its search), its parameters and the per-epoch metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ostr_ray.experiment.layout import ARTIFACTS
from ostr_ray.retrain.protocols import RetrainError, effective_lr
from ostr_ray.tracking import schema
from ostr_ray.tracking.store import TrackingError, check_tracking_uri, resolve_tracking_uri

if TYPE_CHECKING:
    from ostr_ray.retrain.spec import RetrainSpec

DEFAULT_EXPERIMENT = "ostr-retrain"


def tracking_uri_for(spec: RetrainSpec) -> str:
    """``--tracking-uri`` (or the launch's recorded store) > ``MLFLOW_TRACKING_URI`` >
    ``sqlite:///<storage>/mlflow.db``, by :func:`ostr_ray.tracking.store.resolve_tracking_uri`; checked with one
    cheap call (a dead server fails here, in seconds, before Ray starts)."""
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
        client.set_tag(spec.mlflow_run_id, schema.RESUMED, "true")
        return spec.mlflow_run_id
    experiment_id = spec.source.get("experiment_id")
    if experiment_id is None and spec.source.get("parent_run_id"):
        experiment_id = _experiment_of(client, spec.source["parent_run_id"])
    if experiment_id is None:
        found = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        experiment_id = found.experiment_id if found else _create_experiment(spec, client)
    config = spec.retrain_config()
    tags = {
        schema.RUN_NAME: spec.name,
        schema.KIND: schema.KIND_RETRAIN,
        schema.SPACE: spec.space,
        schema.PROTOCOL: config.protocol,
        schema.DATASET: spec.dataset,
        schema.RETRAIN_GENOTYPE: spec.genotype,
        schema.RUN_DIR: str(spec.run_dir),
    }
    if spec.source.get("search_run_id"):
        tags[schema.SEARCH_RUN] = spec.source["search_run_id"]
    if spec.source.get("parent_run_id"):
        tags[schema.PARENT_RUN] = spec.source["parent_run_id"]
    elif spec.source.get("search_run_id"):  # retraining a launch's consensus: nest under the launch run
        tags[schema.PARENT_RUN] = spec.source["search_run_id"]
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    size_metrics = [Metric(key, spec.size[key], now, 0) for key in schema.RETRAIN_SIZE_METRICS]
    params = [Param(k, v) for k, v in _flat_params(spec).items()]
    for i in range(0, len(params), 90):
        client.log_batch(run_id, params=params[i : i + 90])
    client.log_batch(
        run_id, metrics=size_metrics, tags=[RunTag(schema.SOURCE, schema.tag_value(json.dumps(spec.source)))]
    )
    return run_id


def _create_experiment(spec: RetrainSpec, client: Any) -> str:
    """A local store (sqlite/file) keeps its artifacts beside the runs, not in ./mlruns of the cwd."""
    location = None
    if str(client.tracking_uri).startswith(("sqlite:", "file:")) or "://" not in str(client.tracking_uri):
        location = (Path(spec.storage) / ARTIFACTS).as_uri()
    return client.create_experiment(DEFAULT_EXPERIMENT, artifact_location=location)


def _experiment_of(client: Any, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.experiment_id
    except MlflowException:
        return None


def _log_history(client: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics (step = epoch, timestamp = when the epoch ended); epochs already logged (a resumed
    run) are skipped, so every epoch appears once."""
    from mlflow.entities import Metric

    done = {m.step for m in client.get_metric_history(run_id, schema.TEST_TOP1)}
    metrics = [
        Metric(key, float(entry[key]), int(entry.get("time", time.time()) * 1000), int(entry["epoch"]))
        for entry in history
        if int(entry["epoch"]) not in done
        for key in schema.RETRAIN_EPOCH_METRICS
        if key in entry
    ]
    for i in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[i : i + 900])
    if history:
        now = int(time.time() * 1000)
        last = history[-1]
        best = max(entry[schema.TEST_TOP1] for entry in history)
        finals = [
            Metric(schema.BEST_TOP1, best, now, int(last["epoch"])),
            Metric(schema.EPOCHS_DONE, last["epoch"], now, 0),
        ]
        client.log_batch(run_id, metrics=finals)
