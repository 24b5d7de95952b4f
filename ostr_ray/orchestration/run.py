"""``ostr-ray launch``: one Ray Tune trial per (variant, seed), each running the search core's loop.

Ray's own machinery does the distributed work: Tune places trials on the cluster's resources, keeps every
epoch's checkpoint in the experiment storage, retries a failed trial from its last checkpoint
(``FailureConfig``) and restores an interrupted experiment (``Tuner.restore``). The coordinator rides along
as a callback and a stopper (:mod:`.callbacks`); MLflow records through a listener
(:class:`~ostr_ray.tracking.recorder.LaunchRecorder`).
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.experiment import LaunchDir, LaunchReport, LaunchSpec, trial_dirname
from ostr_ray.experiment.storage import resolve
from ostr_ray.orchestration import cluster
from ostr_ray.orchestration.callbacks import ConsensusStopper, CoordinatorCallback, trial_key
from ostr_ray.orchestration.spec import LaunchError, variant_criteria, variant_patience
from ostr_ray.orchestration.trial import search_trial


def _trainable(spec: LaunchSpec):
    return tune.with_resources(search_trial, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})


def _trial_dirname(trial: Any) -> str:
    return trial_dirname(*trial_key(trial))


def init_ray(address: str | None, spec: LaunchSpec) -> bool:
    """Start or join Ray, then check the cluster can host one trial; returns whether this call started Ray."""
    owned = cluster.connect(address)
    try:
        cluster.check_resources(1, spec.cpus_per_trial, spec.gpus_per_trial, "trial")
    except cluster.ClusterError:
        cluster.disconnect(owned)
        raise
    return owned


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
        coordinator.register(TrialKey(trial["variant"], trial["seed"]))
    return coordinator


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
    recorder = _recorder(spec, recorder)
    init_ray(address, spec)
    coordinator = new_coordinator(spec)
    callback = CoordinatorCallback(coordinator, spec.experiment_path)
    callback.view, callback.listeners = view, [*(listeners or []), recorder]
    LaunchDir(spec.experiment_path).write_spec(spec)
    tuner = tune.Tuner(
        _trainable(spec),
        param_space={"trial": tune.grid_search(spec.trial_configs())},
        tune_config=tune.TuneConfig(
            reuse_actors=False, trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage,
            callbacks=[callback],
            stop=ConsensusStopper(coordinator),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    return _fit_and_report(tuner, callback, spec, recorder)


def resume_launch(
    path: str,
    *,
    view: Any = None,
    listeners: list[Any] | None = None,
    address: str | None = None,
    recorder: Any = None,
) -> LaunchReport:
    """Continue an interrupted launch: unfinished trials resume from their last checkpoints and the
    coordinator's history comes back through Tune's callback state; the MLflow runs continue too."""
    experiment_path = resolve(path)
    spec = LaunchDir(experiment_path).read_spec()
    recorder = _recorder(spec, recorder)
    init_ray(address, spec)
    if not tune.Tuner.can_restore(experiment_path):
        raise LaunchError(f"{experiment_path} holds no restorable Tune experiment")
    tuner = tune.Tuner.restore(experiment_path, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True)
    callback = _find_callback(tuner)
    callback.view, callback.listeners = view, [*(listeners or []), recorder]
    return _fit_and_report(tuner, callback, spec, recorder)


def _recorder(spec: LaunchSpec, recorder: Any) -> Any:
    if recorder is not None:
        return recorder
    from ostr_ray.tracking.recorder import LaunchRecorder

    return LaunchRecorder.from_spec(spec)  # fails fast (TrackingError) on an unusable tracking URI


def _find_callback(tuner: Any) -> CoordinatorCallback:
    run_config = tuner._local_tuner.get_run_config()  # the restored (unpickled) run config; Tune has no public getter
    for cb in run_config.callbacks or []:
        if isinstance(cb, CoordinatorCallback):
            return cb
    raise LaunchError("the restored experiment has no ostr-ray coordinator; was it made by ostr-ray launch?")


def _fit_and_report(tuner: Any, callback: CoordinatorCallback, spec: LaunchSpec, recorder: Any) -> LaunchReport:
    started = time.time()
    recorder.start(spec, callback.coordinator)
    launch = LaunchDir(spec.experiment_path)
    try:
        results = tuner.fit()
        coordinator = callback.coordinator
        summary = coordinator.summary()
        report = LaunchReport(
            **vars(summary),
            name=spec.name,
            experiment_path=spec.experiment_path,
            stop_reason=coordinator.experiment_should_stop() or "every trial ended",
            launch=spec,
            search_cost_trial_hours=_trial_hours(results),
            wall_seconds_this_run=time.time() - started,
        )
        report.ground_truth = ground_truth(spec, report)
        report.mlflow = recorder.describe()
        launch.write_history(coordinator.state_dict())
        launch.write_report(report)
    except BaseException as exc:  # Ctrl-C included: no MLflow run may stay RUNNING
        recorder.abort(exc)
        raise
    recorder.finish(report)
    return report


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
