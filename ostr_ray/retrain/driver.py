"""The Ray side, on the driver: check the cluster can host the workers, open the MLflow run, fit a
``TorchTrainer`` running :func:`~ostr_ray.retrain.worker.train_loop_per_worker`, then log every finished epoch.

Resuming (``--resume RUN_DIR``): Ray Train 2.60 runs the V2 trainer, whose ``TorchTrainer.restore`` raises a
DeprecationWarning; V2 restores instead when a trainer is started again with the same ``RunConfig(name,
storage_path)``: it reloads its checkpoint manager from storage and hands the latest checkpoint to
``ray.train.get_checkpoint()``. ``retrain.json`` in the run directory keeps everything needed to do that.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ostr_ray.experiment import RetrainCheckpoint, RetrainDir
from ostr_ray.orchestration import cluster
from ostr_ray.retrain.mlflow_run import _log_history, _open_mlflow_run, tracking_uri_for
from ostr_ray.retrain.protocols import RetrainError, config_from_dict
from ostr_ray.retrain.spec import RetrainSpec, _save_spec, load_spec
from ostr_ray.retrain.worker import train_loop_per_worker
from ostr_ray.tracking import schema
from ostr_ray.tracking.store import client as mlflow_client
from ostr_ray.tracking.store import one_line


def _connect(address: str | None, spec: RetrainSpec) -> bool:
    """Join or start Ray (the launch's helper: a dead --address fails in seconds) and check the workers fit."""
    try:
        owned = cluster.connect_for(
            address, spec.workers, spec.cpus_per_worker, spec.gpus_per_worker, "worker", quiet_driver=False
        )
    except cluster.ClusterError as exc:
        raise RetrainError(str(exc)) from None
    return owned


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
        return RetrainCheckpoint(folder).read_history()


def run_retrain(
    spec: RetrainSpec, *, address: str | None = None, on_start: Callable[[RetrainSpec], None] | None = None
) -> dict[str, Any]:
    """Train ``spec`` on Ray Train and log it to MLflow; returns the summary with the final metrics.

    ``on_start(spec)`` runs once every check passed and the MLflow run exists, right before training (the
    CLI prints the network's size there, so bad input stays a one-line error). Runs again with the same
    ``spec`` (``--resume``) continue from the latest checkpoint in the run dir.
    """
    uri = tracking_uri_for(spec)  # seconds; before Ray, which takes longer to start
    owned = _connect(address, spec)
    try:
        client = mlflow_client(uri)
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
        cluster.disconnect(owned)
    last = history[-1] if history else {}
    return {
        **spec.summary(),
        "mlflow_run_id": spec.mlflow_run_id,
        "tracking_uri": spec.tracking_uri,
        schema.EPOCHS_DONE: last.get("epoch", 0),
        schema.TEST_TOP1: last.get(schema.TEST_TOP1),
        schema.TEST_TOP5: last.get(schema.TEST_TOP5),
        schema.BEST_TOP1: max((h[schema.TEST_TOP1] for h in history), default=None),
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
            artifacts = ((schema.HISTORY_ARTIFACT, history), (schema.RETRAIN_GENOTYPE_ARTIFACT, spec.genotype_json))
            for name, payload in artifacts:
                (Path(folder) / name).write_text(json.dumps(payload, indent=1))
                client.log_artifact(spec.mlflow_run_id, str(Path(folder) / name))
        if error is not None:
            client.set_tag(spec.mlflow_run_id, schema.ERROR, schema.tag_value(one_line(error)))
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

    latest = RetrainDir(spec.run_dir).latest_checkpoint()
    return Checkpoint.from_directory(str(latest.folder)) if latest else None


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
