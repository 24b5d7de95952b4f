"""``ostr-ray launch``: one Ray Tune trial per (variant, seed), each running the search core's loop.

Ray's own machinery does the distributed work: Tune places trials on the cluster's resources, keeps every
epoch's checkpoint in the experiment storage, retries a failed trial from its last checkpoint
(``FailureConfig``) and restores an interrupted experiment (``Tuner.restore``). The coordinator rides along
as a callback and a stopper (:mod:`.callbacks`); MLflow records through a listener
(:class:`~ostr_ray.tracking.recorder.LaunchRecorder`). The driver holds the launch directory for its whole life
(:mod:`.ownership`), and every way it can end (finished, some or all trials failed, Ctrl-C or SIGTERM) is
written as the report's ``outcome``.
"""

from __future__ import annotations

import gc
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.experiment import LaunchDir, LaunchReport, LaunchSpec, trial_run_key
from ostr_ray.experiment.layout import trial_group_dirname
from ostr_ray.experiment.storage import resolve
from ostr_ray.orchestration import cluster
from ostr_ray.orchestration.callbacks import ConsensusStopper, CoordinatorCallback
from ostr_ray.orchestration.interrupts import Interrupts
from ostr_ray.orchestration.ownership import DriverLock
from ostr_ray.orchestration.spec import LaunchError, variant_criteria, variant_patience
from ostr_ray.orchestration.trial import search_trial, trial_seeds
from ostr_ray.tracking.store import TrackingError

REFUSALS = (LaunchError, cluster.ClusterError, TrackingError)
"""Errors that refuse a launch before its first trial (bad address, unusable tracking store, no GPU...)."""


def trainable(spec: LaunchSpec):
    """The trial function with its resources; ``extra["memory_bytes"]`` reserves host memory per trial, so
    Ray does not pack more trials on a node than fit (its memory monitor would kill them)."""
    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    if spec.extra.get("memory_bytes"):
        resources["memory"] = int(spec.extra["memory_bytes"])
    return tune.with_resources(search_trial, resources)


def _trial_dirname(trial: Any) -> str:
    params = trial.config["trial"]
    return trial_group_dirname(params["variant"], trial_seeds(params))


def init_ray(address: str | None, spec: LaunchSpec) -> bool:
    """Start or join Ray, then check the cluster can host one trial; returns whether this call started Ray."""
    return cluster.connect_for(address, 1, spec.cpus_per_trial, spec.gpus_per_trial, "trial")


def new_coordinator(spec: LaunchSpec) -> Coordinator:
    coordinator = Coordinator(
        criterion=spec.criterion,
        patience=spec.patience,
        agreement=spec.agreement,
        experiment_stop=spec.experiment_stop,
        variant_criteria=variant_criteria(spec),
        variant_patience=variant_patience(spec),
    )
    for trial in spec.trial_configs():
        for seed in trial_seeds(trial):
            coordinator.register(TrialKey(trial["variant"], seed))
    return coordinator


def _tuner(spec: LaunchSpec, callback: CoordinatorCallback) -> Any:
    return tune.Tuner(
        trainable(spec),
        param_space={"trial": tune.grid_search(spec.trial_configs())},
        tune_config=tune.TuneConfig(
            reuse_actors=False, trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage,
            callbacks=[callback],
            stop=ConsensusStopper(callback.coordinator),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


def run_launch(
    spec: LaunchSpec,
    *,
    view: Any = None,
    listeners: list[Any] | None = None,
    address: str | None = None,
    recorder: Any = None,
) -> LaunchReport:
    """Fit a new Tuner for ``spec``; returns the final report (also written to ``report.json``).

    ``recorder`` (default: a :class:`~ostr_ray.tracking.recorder.LaunchRecorder` for ``spec.tracking_uri``, its
    store checked before Ray starts) records the launch in MLflow.
    """
    launch = LaunchDir(spec.experiment_path)
    created = _outermost_new_folder(launch)
    try:
        with DriverLock(launch):
            recorder = _with_ray(address, spec, recorder)
            callback = CoordinatorCallback(new_coordinator(spec), spec.experiment_path)
            callback.view, callback.listeners = view, [*(listeners or []), recorder]
            launch.write_spec(spec)
            return _fit_and_report(_tuner(spec, callback), callback, spec, recorder)
    except REFUSALS:
        if created:  # refused before any trial ran: leave nothing behind, not even an empty --storage folder
            shutil.rmtree(created, ignore_errors=True)
        raise


def _outermost_new_folder(launch: LaunchDir) -> Path | None:
    """The outermost folder that running ``launch`` will create (None: remote, or the launch directory exists)."""
    if launch.is_remote:
        return None
    new = None
    for folder in (Path(launch.path), *Path(launch.path).parents):
        if folder.exists():
            return new
        new = folder
    return new


def resume_launch(
    path: str,
    *,
    view: Any = None,
    listeners: list[Any] | None = None,
    address: str | None = None,
    recorder: Any = None,
) -> LaunchReport:
    """Continue an interrupted launch: unfinished trials resume from their last checkpoints and the
    coordinator's history comes back through Tune's callback state; the MLflow runs continue too. A launch
    directory moved since (or copied to another machine) continues where it is now."""
    launch = LaunchDir(resolve(path))
    with DriverLock(launch):
        spec = launch.read_spec().moved_to(launch.path)
        recorder = _with_ray(address, spec, recorder)
        if not tune.Tuner.can_restore(launch.path):
            raise LaunchError(f"{launch.path} holds no restorable Tune experiment")
        tuner = tune.Tuner.restore(launch.path, trainable=trainable(spec), resume_unfinished=True, resume_errored=True)
        callback = _find_callback(tuner)
        callback.experiment_path = launch.path
        callback.view, callback.listeners = view, [*(listeners or []), recorder]
        return _fit_and_report(tuner, callback, spec, recorder)


def _with_ray(address: str | None, spec: LaunchSpec, recorder: Any) -> Any:
    """Start or join Ray and open the launch's MLflow store; returns the recorder.

    A tracking server is checked before Ray starts (an unreachable one fails in seconds, before any cost).
    The launch's own SQLite store is opened while Ray starts instead: opening it imports MLflow's database
    layer and checks its schema (~2 s here), and ``ray.init`` mostly waits on the processes it starts, so the
    two overlap. (``ray.init`` itself must run on the main thread.)
    """
    from ostr_ray.tracking.store import is_server, resolve_tracking_uri

    if recorder is not None or is_server(resolve_tracking_uri(spec.tracking_uri, spec.experiment_path)):
        recorder = _recorder(spec, recorder)
        init_ray(address, spec)
        return recorder
    with ThreadPoolExecutor(max_workers=1) as pool:
        opening = pool.submit(_recorder, spec, None)
        init_ray(address, spec)
        return opening.result()


def _recorder(spec: LaunchSpec, recorder: Any) -> Any:
    if recorder is not None:
        return recorder
    from ostr_ray.tracking.recorder import LaunchRecorder
    from ostr_ray.tracking.store import relocate_local_store

    relocate_local_store(LaunchDir(spec.experiment_path))  # a moved launch's store, before it is opened
    return LaunchRecorder.from_spec(spec)  # fails fast (TrackingError) on an unusable tracking URI


def _find_callback(tuner: Any) -> CoordinatorCallback:
    run_config = tuner._local_tuner.get_run_config()  # the restored (unpickled) run config; Tune has no public getter
    for cb in run_config.callbacks or []:
        if isinstance(cb, CoordinatorCallback):
            return cb
    raise LaunchError("the restored experiment has no ostr-ray coordinator; was it made by ostr-ray launch?")


def _fit_and_report(tuner: Any, callback: CoordinatorCallback, spec: LaunchSpec, recorder: Any) -> LaunchReport:
    """Fit, then write report.json and history.json and close the MLflow record, however the fit ended."""
    started = time.time()
    recorder.start(spec, callback.coordinator)
    # Torch, Ray and MLflow leave ~430k long-lived objects behind their imports; a full garbage collection walks
    # them all (0.3-1 s, stalling whichever trial report it lands on at 1,000 trials: benchmarks/bench_driver.py
    # --freeze-gc). Freezing them moves them out of the collector's sight; the driver never frees them anyway.
    gc.freeze()
    results, raised = None, None
    with Interrupts() as interrupts:
        try:
            results = tuner.fit()
        except KeyboardInterrupt as exc:  # a second Ctrl-C, or one raised from a listener
            raised = exc
            interrupts.signal = interrupts.signal or signal.SIGINT
        except BaseException as exc:  # the driver itself failed: no MLflow run may stay RUNNING
            recorder.abort(exc)
            raise
    _mark_stopped_by_consensus(callback.coordinator, interrupts.signal)
    report = _report(spec, callback.coordinator, results, interrupts.signal, time.time() - started)
    report.mlflow = recorder.describe()
    launch = LaunchDir(spec.experiment_path)
    launch.write_history(callback.coordinator.state_dict())
    launch.write_report(report)
    recorder.finish(report)
    if raised is not None:
        raise raised
    return report


def _mark_stopped_by_consensus(coordinator: Coordinator, interrupted_by: int | None) -> None:
    """Trials Tune ended because the consensus stopped the launch (its stop-all does not report them complete)."""
    reason = coordinator.experiment_should_stop()
    if interrupted_by is not None or reason is None:
        return
    for key in coordinator.trial_keys():
        if coordinator.trial_status(key)[0] == "running":
            coordinator.mark_finished(key, "stopped", "the consensus stopped the launch")


def _report(
    spec: LaunchSpec, coordinator: Coordinator, results: Any, interrupted_by: int | None, seconds: float
) -> LaunchReport:
    summary = coordinator.summary()
    failures = {
        trial_run_key(v, s): info.reason or "failed"
        for v, data in summary.variants.items()
        for s, info in data.seeds.items()
        if info.status == "failed"
    }
    state = outcome(summary, interrupted_by, failures)
    report = LaunchReport(
        **vars(summary),
        name=spec.name,
        outcome=state,
        interrupted_by=signal.Signals(interrupted_by).name if interrupted_by else None,
        failures=failures,
        experiment_path=spec.experiment_path,
        stop_reason=_stop_reason(spec, coordinator, state, interrupted_by, failures),
        launch=spec,
        search_cost_trial_hours=_trial_hours(results) if results is not None else 0.0,
        wall_seconds_this_run=seconds,
    )
    report.ground_truth = ground_truth(spec, report)
    return report


def outcome(summary: Any, interrupted_by: int | None, failures: dict[str, str]) -> str:
    trials = sum(len(data.seeds) for data in summary.variants.values())
    running = any(info.status == "running" for data in summary.variants.values() for info in data.seeds.values())
    if interrupted_by is not None or running:
        return "interrupted"
    if failures and len(failures) == trials:
        return "failed"
    return "partial" if failures else "finished"


def _stop_reason(
    spec: LaunchSpec, coordinator: Coordinator, state: str, interrupted_by: int | None, failures: dict
) -> str:
    if state == "interrupted":
        how = signal.Signals(interrupted_by).name if interrupted_by else "the driver stopped early"
        return f"interrupted ({how}); continue with: ostr-ray launch --resume {spec.experiment_path}"
    if state == "failed":
        return f"every trial failed ({len(failures)})"
    reason = coordinator.experiment_should_stop() or "every trial ended"
    return f"{reason}; {len(failures)} trial(s) failed" if failures else reason


def ground_truth(spec: LaunchSpec, report: LaunchReport) -> dict[str, Any]:
    """NB201 table metrics of every seed's final cell per criterion and of the consensus, per variant."""
    from ostr_ray.core.nb201_bench import load_nb201_table

    truth: dict[str, Any] = {}
    for variant, config in spec.variants.items():
        if not config.get("nb201_table") or variant not in report.variants:
            continue
        table = load_nb201_table(config["nb201_table"])
        data = report.variants[variant]
        seeds = {str(s): {c: table.lookup(g) for c, g in info.genotypes.items()} for s, info in data.seeds.items()}
        truth[variant] = {
            "seeds": seeds,
            "consensus": table.lookup(data.consensus_genotype) if data.consensus_genotype else None,
            "criterion_consensus": {c: table.lookup(g) for c, g in data.criterion_consensus.items() if g},
        }
    return truth


def _trial_hours(results: Any) -> float:
    """Sum over trials of their training time (Tune's time_total_s), in hours."""
    return sum(float((result.metrics or {}).get("time_total_s", 0.0)) for result in results) / 3600.0
