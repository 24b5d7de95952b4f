"""``ostr-ray launch``: one Ray Tune trial per (variant, seed), each running the search core's loop.

Ray's own machinery does the distributed work: Tune places trials on the cluster's resources, keeps every
epoch's checkpoint in the experiment storage, retries a failed trial from its last checkpoint
(``FailureConfig``) and restores an interrupted experiment (``Tuner.restore``). The coordinator is a
``tune.Callback`` (its history travels in Tune's experiment state through ``get_state``/``set_state``) plus
a ``tune.Stopper`` that ends the experiment once the consensus has settled.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.core.config import ConfigError, SearchConfig, build_config, config_from_dict, list_presets
from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.core.events import EpochReport, call

DEFAULT_PRESET_FOR_SPACE = {"nb201": "nb201-cifar10", "darts": "darts-cifar10", "pcdarts": "pcdarts-cifar10"}
LAUNCH_FILE = "launch.json"
SNAPSHOT_FILE = "coordinator.json"
REPORT_FILE = "report.json"
HISTORY_FILE = "history.json"
"""Every trial's per-epoch reports and every variant's per-epoch statistics (the coordinator's state)."""


class LaunchError(ValueError):
    """Bad launch input (seeds, variants, resources, cluster address); one line, before any trial."""


@dataclass
class LaunchSpec:
    """Everything a launch needs, resolved and validated; saved as ``launch.json`` for resume."""

    variants: dict[str, dict[str, Any]]
    """variant name -> resolved SearchConfig dict (seed filled per trial)."""
    seeds: list[int]
    name: str
    storage: str
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    criterion: str = "ostr"
    patience: int = 0
    agreement: float = 0.8
    seed_stop: bool = True
    experiment_stop: bool = True
    tracking_uri: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment_path(self) -> str:
        return join_storage(self.storage, self.name)

    def trial_configs(self) -> list[dict[str, Any]]:
        """One param dict per (variant, seed): what each Tune trial receives."""
        threads = max(1, int(self.cpus_per_trial))
        trials = []
        for variant, base in self.variants.items():
            for seed in self.seeds:
                search = {**base, "seed": seed}
                if not self.seed_stop:
                    search["patience"] = 0
                search.setdefault("threads", None)
                if search["threads"] is None:
                    search["threads"] = threads
                trials.append(
                    {"variant": variant, "seed": seed, "search": search, "experiment_path": self.experiment_path}
                )
        return trials


# ---------------------------------------------------------------------------------------------- input
def parse_seeds(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"3,7,11"`` -> that list. Empty, negative or duplicate seeds are refused."""
    text = str(text).strip()
    if not text:
        raise LaunchError("--seeds is empty; give a count (5) or a list (3,7,11)")
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise LaunchError(f"--seeds {text!r} is not a count or a comma-separated list of integers") from None
    if len(parts) == 1:
        if numbers[0] < 1:
            raise LaunchError(f"--seeds {text!r}: the number of seeds must be >= 1")
        return list(range(numbers[0]))
    if any(n < 0 for n in numbers):
        raise LaunchError(f"--seeds {text!r}: negative seed {min(numbers)}")
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise LaunchError(f"--seeds {text!r}: duplicate seed {duplicates[0]}")
    return numbers


def resolve_variants(spaces: str | None, preset: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> validated config dict. ``spaces`` lists spaces (nb201) or preset names."""
    names = [n.strip() for n in spaces.split(",")] if spaces else [preset]
    if any(not n for n in names):
        raise LaunchError(f"--spaces {spaces!r} has an empty entry")
    variants = {}
    for name in names:
        preset_name = DEFAULT_PRESET_FOR_SPACE.get(name, name)
        if preset_name not in list_presets() and not preset_name.endswith((".yaml", ".yml")):
            raise LaunchError(
                f"unknown space or preset {name!r}; choose from "
                f"{', '.join([*DEFAULT_PRESET_FOR_SPACE, *list_presets()])}"
            )
        variants[Path(preset_name).stem] = _absolute_paths(build_config(preset_name, overrides).to_dict())
    return variants


def _absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Trials run in their own working directories: resolve the driver's relative paths now."""
    for key in ("data_dir", "nb201_table"):
        value = config.get(key)
        if value and "://" not in value:
            config[key] = str(Path(value).expanduser().resolve())
    return config


def check_data_sources(variants: dict[str, dict[str, Any]]) -> None:
    """Cheap existence checks so a wrong --data-dir fails before Ray starts, not inside five trials."""
    from ostr_ray.data import check_data_source

    for config in variants.values():
        check_data_source(config["dataset"], config.get("data_dir"), download=bool(config.get("download")))
        table = config.get("nb201_table")
        if table and not Path(table).exists():
            raise LaunchError(f"--nb201-table {table} does not exist")


def join_storage(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage).resolve() / name)


# ---------------------------------------------------------------------------------------------- trial
def search_trial(params: dict[str, Any]) -> None:
    """The Tune trainable: one seed's search, resumed from Tune's checkpoint after a retry or restore."""
    import torch

    from ostr_ray.core.nb201_bench import NB201TableError
    from ostr_ray.core.search import CHECKPOINT_NAME, Searcher, SearchError
    from ostr_ray.data import DataError

    config = config_from_dict(params["trial"]["search"])
    torch.set_num_threads(config.threads or 1)
    trial_dir = Path(tune.get_context().get_trial_dir())
    work = trial_dir / "search"
    work.mkdir(parents=True, exist_ok=True)
    _write_worker_pid(params["trial"])
    reporter = _TuneReporter(work)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as restored:
                Path(work / CHECKPOINT_NAME).write_bytes((Path(restored) / CHECKPOINT_NAME).read_bytes())
            searcher = Searcher.resume(work, config=config, out_dir=work, callbacks=[reporter])
            reporter.backfill = [r.to_json() for r in searcher.history]
        else:
            searcher = Searcher(config, out_dir=work, callbacks=[reporter])
        searcher.run()
    except (SearchError, DataError, NB201TableError, ConfigError) as exc:
        # Deterministic failures: a retry would fail the same way, so end the trial and say why.
        tune.report({"ostr_failed": str(exc), "epoch": reporter.last_epoch})


def _write_worker_pid(trial: dict[str, Any]) -> None:
    """``<experiment>/<variant>-seed<k>/worker.pid``: which process runs the trial now (operators, fault tests).

    Written straight into the experiment storage when it is a local or shared path: the trial's own
    directory is a staging copy that Tune only syncs there later.
    """
    experiment_path = trial.get("experiment_path", "")
    if not experiment_path or "://" in experiment_path:
        return
    pid_file = Path(experiment_path) / trial_dirname(trial["variant"], trial["seed"]) / "worker.pid"
    _atomic_write(pid_file, str(os.getpid()))


class _TuneReporter:
    """Search callback inside a trial: each epoch's report and checkpoint go to Tune in one call."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.backfill: list[dict[str, Any]] | None = None
        self.last_epoch = 0

    def on_epoch_end(self, report: EpochReport, checkpoint_path: str | None) -> None:
        metrics: dict[str, Any] = {
            **report.scalars(),
            "epoch": report.epoch,
            "ostr_report": json.dumps(report.to_json()),
        }
        if self.backfill:
            metrics["ostr_backfill"] = json.dumps(self.backfill)  # epochs a retried trial already reported
            self.backfill = None
        if report.stop_reason:
            metrics["ostr_stop"] = report.stop_reason
        self.last_epoch = report.epoch
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.work)))


# ---------------------------------------------------------------------------------------------- driver side
class CoordinatorCallback(tune.Callback):
    """Feeds every trial's epoch reports to the :class:`Coordinator`; snapshots it beside the experiment.

    Listeners (the live view, the MLflow recorder) get ``on_trial_report(key, report)`` for every report,
    epochs re-sent by a retried or restored trial included, ``on_epoch_stats(stats)``, and, where they have
    it, ``on_trial_finished(key, status, reason)`` once a trial ends (finished, stopped or failed).
    """

    def __init__(self, coordinator: Coordinator, experiment_path: str) -> None:
        self.coordinator = coordinator
        self.experiment_path = experiment_path
        self.view: Any = None
        self.listeners: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:  # the live view and listeners are process-local
        state = dict(self.__dict__)
        state["view"] = None
        state["listeners"] = []
        return state

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        _remember_staging(self.experiment_path, trial)
        key = _trial_key(trial)
        new_stats = []
        reports = [EpochReport.from_json(r) for r in json.loads(result.get("ostr_backfill", "[]"))]
        if "ostr_report" in result:
            reports.append(EpochReport.from_json(json.loads(result["ostr_report"])))
        for report in reports:
            new_stats += self.coordinator.update(key, report)
            for listener in self.listeners:
                listener.on_trial_report(key, report)
        if "ostr_failed" in result:
            new_stats += self.coordinator.mark_finished(key, "failed", result["ostr_failed"])
        self._relay_stats(new_stats)
        if "ostr_failed" in result:
            self._relay_finished(key)
        self._snapshot()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = _trial_key(trial)
        if self.coordinator.trial_status(key)[0] != "failed":  # a failed one was relayed when it said so
            self._relay_stats(self.coordinator.mark_finished(key, "finished"))
            self._relay_finished(key)
        self._snapshot()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = _trial_key(trial)
        error = getattr(trial, "error_file", None) or "trial raised an error"
        self._relay_stats(self.coordinator.mark_finished(key, "failed", f"error after retries ({error})"))
        self._relay_finished(key)
        self._snapshot()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.view is not None:
            self.view.close()
        self._snapshot()

    def get_state(self) -> dict[str, Any]:
        return self.coordinator.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.coordinator.load_state_dict(state)

    def _relay_stats(self, new_stats: list) -> None:
        for listener in self.listeners:
            for stats in new_stats:
                listener.on_epoch_stats(stats)

    def _relay_finished(self, key: TrialKey) -> None:
        status, reason = self.coordinator.trial_status(key)
        call(self.listeners, "on_trial_finished", key, status, reason)

    def _snapshot(self) -> None:
        snapshot = {**self.coordinator.summary(), "updated_at": time.time()}
        write_text(self.experiment_path, SNAPSHOT_FILE, json.dumps(snapshot, indent=1))
        if self.view is not None:
            self.view.refresh()


class ConsensusStopper(tune.Stopper):
    """Stops a trial when its seed reached Algorithm 1's rule, and all trials once the consensus held."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get("ostr_stop"))

    def stop_all(self) -> bool:
        return self.coordinator.experiment_should_stop() is not None


def _remember_staging(experiment_path: str, trial: Any) -> None:
    storage = getattr(trial, "storage", None)
    staging = getattr(storage, "experiment_driver_staging_path", None)
    if staging and experiment_path not in _DRIVER_STAGING:
        _DRIVER_STAGING[experiment_path] = staging


def _trial_key(trial: Any) -> TrialKey:
    params = trial.config["trial"]
    return TrialKey(params["variant"], int(params["seed"]))


_DRIVER_STAGING: dict[str, str] = {}
"""experiment path -> Tune's driver staging dir for it, once a trial has told us (see ``write_text``)."""


def write_text(experiment_path: str, name: str, text: str) -> None:
    """Write a driver-side file of the experiment (atomically where local; through pyarrow for URIs).

    While Tune runs, it periodically copies its driver staging directory over the experiment directory;
    after a restore that staging copy holds the files as they were at restore time. So a file written
    during a fit is written to the staging directory too, or Tune's next sync would roll it back.
    """
    if "://" in experiment_path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
        with fs.open_output_stream(f"{root}/{name}") as stream:
            stream.write(text.encode())
    else:
        _atomic_write(Path(experiment_path) / name, text)
    staging = _DRIVER_STAGING.get(experiment_path)
    if staging:
        _atomic_write(Path(staging) / name, text)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_text(experiment_path: str, name: str) -> str:
    if "://" in experiment_path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
        with fs.open_input_stream(f"{root}/{name}") as stream:
            return stream.read().decode()
    path = Path(experiment_path) / name
    if not path.is_file():
        raise LaunchError(f"no {name} in {experiment_path}; is it an ostr-ray launch directory?")
    return path.read_text()


# ---------------------------------------------------------------------------------------------- running
def init_ray(address: str | None, spec: LaunchSpec) -> None:
    """Start or join Ray, then check the cluster can host one trial; a clear error otherwise."""
    import ray

    owned = not (ray.is_initialized() and address is None)  # else reuse the caller's Ray (tests, notebooks)
    if owned:
        _connect(address)
    resources = ray.cluster_resources()
    problem = None
    if spec.gpus_per_trial > 0 and resources.get("GPU", 0) == 0:
        problem = f"--gpus-per-trial {spec.gpus_per_trial} but the Ray cluster has no GPU"
    elif spec.cpus_per_trial > resources.get("CPU", 0):
        problem = f"--cpus-per-trial {spec.cpus_per_trial} exceeds the cluster's {resources.get('CPU', 0):g} CPUs"
    if problem:
        if owned:
            ray.shutdown()
        raise LaunchError(problem)


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Tune's own console reporter would interleave with the live table: the legacy reporter at verbose=0
    # is silent, so the rich view is the only output.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LaunchError(f"cannot reach Ray at --address {address!r}: {str(exc).splitlines()[0]}") from None


def _check_reachable(address: str) -> None:
    """ray.init keeps retrying an unreachable GCS for minutes; a plain TCP connect answers in seconds."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot reach Ray at --address {address!r}: {exc}") from None


def _trainable(spec: LaunchSpec):
    return tune.with_resources(search_trial, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})


def trial_dirname(variant: str, seed: int) -> str:
    """The one name of a trial's folder under the experiment (Tune's trial dir and our pid file)."""
    return f"{variant}-seed{seed}"


def _trial_dirname(trial: Any) -> str:
    params = trial.config["trial"]
    return trial_dirname(params["variant"], params["seed"])


def run_launch(
    spec: LaunchSpec,
    *,
    view: Any = None,
    listeners: list[Any] | None = None,
    address: str | None = None,
    recorder: Any = None,
) -> dict[str, Any]:
    """Fit a new Tuner for ``spec``; returns the final report (also written to ``report.json``).

    ``recorder`` (default: a :class:`~ostr_ray.tracking.LaunchRecorder` for ``spec.tracking_uri``, its
    store checked before Ray starts) records the launch in MLflow.
    """
    recorder = _recorder(spec, recorder)
    init_ray(address, spec)
    coordinator = Coordinator(
        criterion=spec.criterion,
        patience=spec.patience,
        agreement=spec.agreement,
        experiment_stop=spec.experiment_stop,
    )
    for trial in spec.trial_configs():
        coordinator.register(TrialKey(trial["variant"], trial["seed"]))
    callback = CoordinatorCallback(coordinator, spec.experiment_path)
    callback.view, callback.listeners = view, [*(listeners or []), recorder]
    write_text(spec.experiment_path, LAUNCH_FILE, json.dumps(asdict(spec), indent=1))
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
) -> dict[str, Any]:
    """Continue an interrupted launch: unfinished trials resume from their last checkpoints and the
    coordinator's history comes back through Tune's callback state; the MLflow runs continue too."""
    experiment_path = _experiment_path(path)
    spec = load_launch_spec(experiment_path)
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
    run_config = tuner._local_tuner.get_run_config()  # the restored (unpickled) run config
    for cb in run_config.callbacks or []:
        if isinstance(cb, CoordinatorCallback):
            return cb
    raise LaunchError("the restored experiment has no ostr-ray coordinator; was it made by ostr-ray launch?")


def _fit_and_report(tuner: Any, callback: CoordinatorCallback, spec: LaunchSpec, recorder: Any) -> dict[str, Any]:
    started = time.time()
    recorder.start(spec, callback.coordinator)
    try:
        results = tuner.fit()
        coordinator = callback.coordinator
        stop_reason = coordinator.experiment_should_stop() or "every trial ended"
        report = {
            "name": spec.name,
            "experiment_path": spec.experiment_path,
            "stop_reason": stop_reason,
            "launch": asdict(spec),
            "search_cost_trial_hours": _trial_hours(results),
            "wall_seconds_this_run": time.time() - started,
            **coordinator.summary(),
        }
        report["ground_truth"] = _ground_truth(spec, report)
        report["mlflow"] = recorder.describe()
        write_text(spec.experiment_path, HISTORY_FILE, json.dumps(coordinator.state_dict()))
        write_text(spec.experiment_path, REPORT_FILE, json.dumps(report, indent=1))
    except BaseException as exc:  # Ctrl-C included: no MLflow run may stay RUNNING
        recorder.abort(exc)
        raise
    recorder.finish(report)
    return report


def _ground_truth(spec: LaunchSpec, report: dict[str, Any]) -> dict[str, Any]:
    """NB201 table accuracy of every seed's final cell per criterion and of the consensus, per variant."""
    from ostr_ray.core.nb201_bench import load_nb201_table

    truth: dict[str, Any] = {}
    for variant, config in spec.variants.items():
        if not config.get("nb201_table") or variant not in report["variants"]:
            continue
        table = load_nb201_table(config["nb201_table"])
        data = report["variants"][variant]
        seeds = {
            seed: {crit: table.lookup(g) for crit, g in s["genotypes"].items()} for seed, s in data["seeds"].items()
        }
        consensus = data.get("consensus_genotype")
        truth[variant] = {
            "seeds": seeds,
            "consensus": table.lookup(consensus) if consensus else None,
            "criterion_consensus": {c: table.lookup(g) for c, g in data.get("criterion_consensus", {}).items() if g},
        }
    return truth


def _trial_hours(results: Any) -> float:
    """Sum over trials of their training time (Tune's time_total_s), in hours."""
    total = 0.0
    for result in results:
        metrics = result.metrics or {}
        total += float(metrics.get("time_total_s", 0.0))
    return total / 3600.0


def _experiment_path(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def load_launch_spec(path: str) -> LaunchSpec:
    return LaunchSpec(**json.loads(read_text(_experiment_path(path), LAUNCH_FILE)))


def load_report(path: str) -> dict[str, Any]:
    return json.loads(read_text(_experiment_path(path), REPORT_FILE))


def load_snapshot(path: str) -> dict[str, Any]:
    return json.loads(read_text(_experiment_path(path), SNAPSHOT_FILE))


def launch_status(path: str, now: float | None = None) -> dict[str, Any]:
    """The live snapshot plus whether the launch finished: ``state`` is "finished" (report.json written, its
    stop reason) or "unfinished" (still running, or interrupted and resumable; the snapshot's age tells which)."""
    status = load_snapshot(path)
    try:
        report = load_report(path)
    except (LaunchError, OSError):  # no report.json (yet): the driver is running or was stopped early
        report = None
    if report is not None:
        return {**status, "state": "finished", "stop_reason": report.get("stop_reason")}
    age = (now or time.time()) - status["updated_at"] if "updated_at" in status else None
    when = f"last update {age:.0f} s ago" if age is not None else "last update time unknown"
    return {
        **status,
        "state": "unfinished",
        "stop_reason": f"not finished ({when}): running, or interrupted; resume: ostr-ray launch --resume {path}",
    }


def default_name(variants: dict[str, Any]) -> str:
    return f"launch-{'+'.join(variants)}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_spec(
    *,
    preset: str,
    spaces: str | None,
    seeds: str,
    storage: str | None,
    name: str | None,
    overrides: dict[str, Any],
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_failures: int,
    criterion: str | None,
    patience: int | None,
    agreement: float,
    seed_stop: bool,
    experiment_stop: bool,
    tracking_uri: str | None = None,
) -> LaunchSpec:
    """Resolve and validate every launch input; raises LaunchError/ConfigError before Ray starts."""
    seed_list = parse_seeds(seeds)
    if criterion is not None:
        overrides = {**overrides, "criterion": criterion}
    if patience is not None:
        overrides = {**overrides, "patience": patience}
    variants = resolve_variants(spaces, preset, overrides)
    if not 0 < agreement <= 1:
        raise LaunchError(f"--agreement {agreement!r} must be in (0, 1]")
    if gpus_per_trial < 0 or cpus_per_trial <= 0:
        raise LaunchError(f"resources per trial must be positive (cpus {cpus_per_trial!r}, gpus {gpus_per_trial!r})")
    if max_failures < 0:
        raise LaunchError(f"--max-failures {max_failures!r} must be >= 0")
    check_data_sources(variants)
    first = config_from_dict(next(iter(variants.values())))
    spec = LaunchSpec(
        variants=variants,
        seeds=seed_list,
        name=name or default_name(variants),
        storage=storage or str(Path("ostr_runs").resolve()),
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_failures=max_failures,
        criterion=first.criterion,
        patience=first.patience,
        agreement=agreement,
        seed_stop=seed_stop,
        experiment_stop=experiment_stop,
        # kept in launch.json, so --resume records into the same MLflow store; None = the launch's own SQLite
        tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
    )
    if spec.tracking_uri is None and "://" in spec.experiment_path:
        raise LaunchError(
            f"--storage {spec.storage!r} is remote: give --tracking-uri http://<mlflow server> "
            "(or set MLFLOW_TRACKING_URI) for the MLflow record"
        )
    return spec


__all__ = [
    "ConfigError",
    "LaunchError",
    "LaunchSpec",
    "SearchConfig",
    "build_spec",
    "load_report",
    "load_snapshot",
    "parse_seeds",
    "resume_launch",
    "run_launch",
]
