"""The evaluation's driver: every (cell, retraining seed) as one trial of ONE Ray Tune experiment, with the
launch's lifecycle.

Tune places the runs on the cluster (``--cpus-per-run`` / ``--gpus-per-run``, as many at once as it holds),
keeps each epoch's checkpoint, retries a failed run from its last checkpoint (``FailureConfig``) and restores
an interrupted evaluation (``--resume``: ``Tuner.restore``). The driver holds the evaluation directory for its
whole life (:class:`~ostr_ray.orchestration.ownership.DriverLock`), stops gracefully on Ctrl-C / SIGTERM
(:class:`~ostr_ray.orchestration.interrupts.Interrupts`) and however the fit ends writes the report, whose
``outcome`` is the launch's: finished, partial (some runs failed), failed (all did) or interrupted. With
``--scheduler asha`` Tune's ASHA stops the runs that trail at a rung; such a run is "stopped early" (at its last
epoch), not failed, and the evaluation still finishes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.evaluate.mlflow_run import EpochLogger, finish_runs, open_runs, tracking_uri_for
from ostr_ray.evaluate.selection import EvaluateError
from ostr_ray.evaluate.spec import EvaluationSpec
from ostr_ray.evaluate.trial import evaluation_trial, loop_config
from ostr_ray.evidence.evaluation import FAILED, FINISHED, INTERRUPTED, STOPPED_EARLY, summarise
from ostr_ray.experiment.layout import EVALUATION_DIR, EvaluationDir
from ostr_ray.orchestration import cluster
from ostr_ray.orchestration.interrupts import Interrupts
from ostr_ray.orchestration.ownership import DriverLock
from ostr_ray.orchestration.spec import LaunchError
from ostr_ray.retrain.driver import read_history
from ostr_ray.tracking import schema
from ostr_ray.tracking.store import client as mlflow_client


def _trainable(spec: EvaluationSpec) -> Any:
    resources = {"cpu": spec.cpus_per_run, "gpu": spec.gpus_per_run}
    return tune.with_resources(evaluation_trial, resources)


def _scheduler(spec: EvaluationSpec) -> Any:
    """Tune's ASHA over the runs' per-epoch top-1 (``spec.scheduler``), or None: every run trains every epoch."""
    if not spec.scheduler:
        return None
    from ray.tune.schedulers import ASHAScheduler

    settings = {k: v for k, v in spec.scheduler.items() if k != "name"}
    return ASHAScheduler(**settings)


def _run_name(trial: Any) -> str:
    return trial.config["run"]["name"]


def _tuner(spec: EvaluationSpec, logger: EpochLogger) -> Any:
    runs = [{**run, "loop": loop_config(spec, run), "gpus": spec.gpus_per_run} for run in spec.runs()]
    return tune.Tuner(
        _trainable(spec),
        param_space={"run": tune.grid_search(runs)},
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(spec),
            reuse_actors=False,
            trial_dirname_creator=_run_name,
            trial_name_creator=_run_name,
        ),
        run_config=tune.RunConfig(
            name=EVALUATION_DIR,
            storage_path=spec.launch_path,
            callbacks=[logger],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


def _restored(spec: EvaluationSpec, echo: Callable[[str], None] | None) -> Any:
    folder = EvaluationDir(spec.launch_path)
    if not tune.Tuner.can_restore(folder.path):
        raise EvaluateError(f"{folder.path} holds no restorable Tune experiment")
    tuner = tune.Tuner.restore(folder.path, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True)
    for callback in tuner._local_tuner.get_run_config().callbacks or []:  # no public getter (as the launch's)
        if isinstance(callback, EpochLogger):
            callback.tracking_uri, callback.run_ids, callback.echo = spec.tracking_uri, spec.mlflow["runs"], echo
    return tuner


def _connect(address: str | None, spec: EvaluationSpec) -> bool:
    try:
        owned = cluster.connect_for(address, 1, spec.cpus_per_run, spec.gpus_per_run, "run")
    except cluster.ClusterError as exc:
        raise EvaluateError(str(exc)) from None
    return owned


def run_evaluation(
    spec: EvaluationSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    on_start: Callable[[EvaluationSpec], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or with ``resume``, continue) the evaluation ``spec``; returns its report (also ``report.json``)."""
    folder = EvaluationDir(spec.launch_path)
    spec.tracking_uri = tracking_uri_for(spec)  # seconds, and before Ray: a dead server fails here
    created = not Path(folder.path).exists()
    try:
        lock = DriverLock(folder)
        lock.acquire()
    except LaunchError as exc:
        raise EvaluateError(str(exc)) from None
    try:
        if not resume and folder.exists():
            raise EvaluateError(f"{folder.path} already holds an evaluation; continue it with --resume")
        try:
            owned = _connect(address, spec)
        except EvaluateError:
            if created:  # refused before any run: leave no evaluation folder behind
                lock.release()
                shutil.rmtree(folder.path, ignore_errors=True)
            raise
        try:
            client = mlflow_client(spec.tracking_uri)
            open_runs(spec, client)
            folder.write_spec(spec.to_json())
            if on_start is not None:
                on_start(spec)
            if resume:
                tuner = _restored(spec, echo)
            else:
                logger = EpochLogger(spec.tracking_uri, spec.mlflow["runs"])
                logger.echo = echo
                tuner = _tuner(spec, logger)
            return _fit_and_report(tuner, spec, client)
        finally:
            cluster.disconnect(owned)
    finally:
        lock.release()


def resume_evaluation(launch_path: str, **kwargs: Any) -> dict[str, Any]:
    """Continue the evaluation of ``launch_path`` from its ``evaluate.json``: unfinished runs resume from their last
    checkpoints, failed ones are retried, into the same MLflow runs."""
    data = EvaluationDir(launch_path).read_spec(required=True)
    spec = EvaluationSpec.from_json(data)
    spec.launch_path = EvaluationDir(launch_path).launch_path  # the launch may have moved
    return run_evaluation(spec, resume=True, **kwargs)


def _fit_and_report(tuner: Any, spec: EvaluationSpec, client: Any) -> dict[str, Any]:
    # Tune's new console output prints its configuration table on stdout (which --json keeps clean); the legacy
    # reporter at verbose=0 is silent, as in a launch
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = time.time()
    results, raised = None, None
    with Interrupts() as interrupts:
        try:
            results = tuner.fit()
        except KeyboardInterrupt as exc:  # a second Ctrl-C stops at once
            raised = exc
            interrupts.signal = interrupts.signal or signal.SIGINT
    report = build_report(spec, _runs(spec, results), interrupts.signal, time.time() - started)
    EvaluationDir(spec.launch_path).write_report(report)
    finish_runs(spec, client, report)
    if raised is not None:
        raise raised
    return report


def _runs(spec: EvaluationSpec, results: Any) -> dict[str, dict[str, Any]]:
    """Every run's result: its status, epochs done and final metrics (from its checkpoint's history, which
    holds every epoch, also those before a retry). A run that ended without error before its last epoch was
    stopped by the scheduler (Tune marks its last result ``done``); one that has not ended is interrupted."""
    epochs = int(spec.config["epochs"])
    runs = {run["name"]: {**run, "status": INTERRUPTED, "epochs_done": 0} for run in spec.runs()}
    for result in results or []:
        name = result.config["run"]["name"]
        history = read_history(result.checkpoint)
        last = history[-1] if history else {}
        entry = runs[name]
        entry.update(
            epochs_done=int(last.get("epoch", 0)),
            test_top1=last.get(schema.TEST_TOP1),
            test_top5=last.get(schema.TEST_TOP5),
            best_top1=max((h[schema.TEST_TOP1] for h in history), default=None),
            top1_by_epoch=[h[schema.TEST_TOP1] for h in history],
        )
        if result.error is not None:
            entry.update(status=FAILED, error=str(result.error).strip().splitlines()[-1][:300])
        elif entry["epochs_done"] >= epochs:
            entry["status"] = FINISHED
        elif spec.scheduler and (result.metrics or {}).get("done"):
            entry.update(status=STOPPED_EARLY, stopped_at_epoch=entry["epochs_done"])
    return runs


def outcome(runs: dict[str, dict[str, Any]], interrupted_by: int | None) -> str:
    """The launch's outcomes: interrupted (a signal, or runs left unfinished), failed (every run), partial
    (some), finished."""
    statuses = [run["status"] for run in runs.values()]
    if interrupted_by is not None or INTERRUPTED in statuses:
        return "interrupted"
    if statuses.count(FAILED) == len(statuses):
        return "failed"
    return "partial" if FAILED in statuses else "finished"


def build_report(
    spec: EvaluationSpec, runs: dict[str, dict[str, Any]], interrupted_by: int | None, seconds: float
) -> dict[str, Any]:
    state = outcome(runs, interrupted_by)
    failed = [name for name, run in runs.items() if run["status"] == FAILED]
    stopped = sum(1 for run in runs.values() if run["status"] == STOPPED_EARLY)
    reasons = {
        "interrupted": f"interrupted; continue with: ostr-ray evaluate {spec.launch_path} --resume",
        "failed": f"every run failed ({len(failed)})",
        "partial": f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}",
        "finished": f"all {len(runs)} runs finished"
        if not stopped
        else f"all {len(runs)} runs ended: {len(runs) - stopped} trained every epoch, {stopped} stopped early by ASHA",
    }
    return {
        "outcome": state,
        "interrupted_by": signal.Signals(interrupted_by).name if interrupted_by else None,
        "stop_reason": reasons[state],
        "launch_path": spec.launch_path,
        "protocol": spec.config["protocol"],
        "epochs": spec.config["epochs"],
        "dataset": spec.dataset,
        "seeds": spec.seeds,
        "scheduler": spec.scheduler,
        "runs": runs,
        **summarise(spec.to_json(), runs),
        "mlflow": {**spec.mlflow, "tracking_uri": spec.tracking_uri},
        "wall_seconds_this_run": seconds,
    }
