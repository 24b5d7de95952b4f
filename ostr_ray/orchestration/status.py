"""``ostr-ray status``: where a launch stands, read from its directory (no Ray needed).

States: ``live`` (its driver holds the directory and beats), ``starting`` (live, before the first epoch was
summarised), ``interrupted`` (the driver is gone before the launch ended: Ctrl-C, SIGTERM, a crash, a killed
node), and, from its report, ``finished``, ``partial`` (some trials failed) or ``failed``. A launch's evaluation
(``ostr-ray evaluate``, ``<launch>/evaluation``) has the same states (:func:`evaluation_status`), read from its
driver record, its report and its runs' checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ostr_ray.core.criteria import DEFAULT_CRITERION
from ostr_ray.core.summaries import LaunchSummary
from ostr_ray.experiment import LaunchDir, LaunchDirError, LaunchReport
from ostr_ray.experiment.layout import EVALUATION_DIR, EvaluationDir
from ostr_ray.orchestration.capacity import Waiting, read_waiting
from ostr_ray.orchestration.ownership import driver_alive


@dataclass
class LaunchStatus:
    path: str
    state: str
    stop_reason: str
    summary: LaunchSummary
    report: LaunchReport | None = None
    evaluation: EvaluationStatus | None = None
    """The launch's evaluation (``ostr-ray evaluate``), when it has one."""
    waiting: Waiting | None = None
    """A live launch's trials waiting for resources (nodes the autoscaler has yet to start), when any wait."""

    def to_json(self) -> dict[str, Any]:
        data = self.report.to_json() if self.report else self.summary.summary_json()
        data = {**data, "experiment_path": self.path, "state": self.state, "stop_reason": self.stop_reason}
        data = {**data, **({"waiting": self.waiting.to_json()} if self.waiting else {})}
        return {**data, **({"evaluation": self.evaluation.to_json()} if self.evaluation else {})}


def launch_status(path: str, now: float | None = None) -> LaunchStatus:
    """Where the launch at ``path`` stands, and its evaluation's state when it has been evaluated."""
    found = _launch_status(path, now)
    found.evaluation = evaluation_status(found.path, now)
    return found


def _launch_status(path: str, now: float | None = None) -> LaunchStatus:
    launch = LaunchDir(path)
    if not launch.exists():
        raise LaunchDirError(f"no launch directory at {path}")
    now = now or time.time()
    driver = launch.read_driver()
    snapshot = launch.read_snapshot(required=False)
    if driver_alive(driver, now):
        summary = snapshot or _starting_summary(launch)
        state = "live" if snapshot is not None and snapshot.variants else "starting"
        waiting = read_waiting(launch.path)
        waiting = waiting if waiting is not None and waiting.count else None
        return LaunchStatus(launch.path, state, _live_reason(driver, snapshot, now, waiting), summary, waiting=waiting)
    report = launch.read_report(required=False)
    if report is not None and report.outcome != "interrupted":
        return LaunchStatus(launch.path, report.outcome, report.stop_reason, report, report)
    if snapshot is None and report is None and not launch.is_launch():
        raise LaunchDirError(f"no launch.json or coordinator.json in {path}; is it an ostr-ray launch directory?")
    summary = report or snapshot or _starting_summary(launch)
    reason = f"interrupted ({_when(driver, snapshot, now)}); continue with: ostr-ray launch --resume {launch.path}"
    if report is not None:
        reason = report.stop_reason
    return LaunchStatus(launch.path, "interrupted", reason, summary, report)


def _starting_summary(launch: LaunchDir) -> LaunchSummary:
    spec = launch.read_spec(required=False)
    return LaunchSummary(criterion=spec.criterion if spec else DEFAULT_CRITERION)


def _live_reason(driver: Any, snapshot: Any, now: float, waiting: Waiting | None = None) -> str:
    progress = "before its first epoch" if snapshot is None or not snapshot.variants else "running"
    reason = f"{progress}: driver PID {driver.pid} on {driver.host}, heartbeat {now - driver.heartbeat_at:.0f} s ago"
    if waiting is not None:
        since = f" (for {now - waiting.since:.0f} s)" if waiting.since else ""
        reason += f"; {waiting.line()}{since}"
    return reason


def _when(driver: Any, snapshot: Any, now: float) -> str:
    last = max(t for t in (driver and driver.heartbeat_at, snapshot and snapshot.updated_at, 0.0) if t is not None)
    return f"last sign of life {now - last:.0f} s ago" if last else "no sign of life recorded"


@dataclass
class EvaluationStatus:
    """Where a launch's evaluation stands: its state (as a launch's), why, and per run its status and epochs."""

    path: str
    state: str
    stop_reason: str
    epochs: int
    runs: dict[str, dict[str, Any]]
    """Run name -> ``{cell, seed, status, epochs_done, test_top1}``; status from the report once there is one,
    else ``finished`` / ``running`` / ``pending`` from its checkpoints."""

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.runs.values():
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluation_path": self.path,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "epochs": self.epochs,
            "counts": self.counts(),
            "runs": self.runs,
        }


def is_evaluation_path(path: str) -> bool:
    """Whether ``path`` names an evaluation's folder (``<launch>/evaluation``) rather than a launch."""
    return "://" not in path and Path(path).name == EVALUATION_DIR and EvaluationDir(Path(path).parent).exists()


def evaluation_status(launch_path: str, now: float | None = None) -> EvaluationStatus | None:
    """The state of the evaluation of the launch at ``launch_path`` (None when it was never evaluated):
    ``live`` while its driver beats, else its report's outcome, else ``interrupted`` (the driver died first)."""
    if "://" in launch_path:  # evaluations run from local launch directories only
        return None
    folder = EvaluationDir(launch_path)
    spec = folder.read_spec(required=False)
    if spec is None:
        return None
    now = now or time.time()
    epochs = int(spec.get("config", {}).get("epochs", 0))
    report = folder.read_report(required=False)
    driver = folder.read_driver()
    resume = f"continue with: ostr-ray evaluate {folder.launch_path} --resume"
    if driver_alive(driver, now):
        runs = _checkpointed_runs(folder, spec, epochs)
        done = sum(1 for run in runs.values() if run["status"] == "finished")
        beat = f"driver PID {driver.pid} on {driver.host}, heartbeat {now - driver.heartbeat_at:.0f} s ago"
        reason = f"running: {done} of {len(runs)} runs trained every epoch; {beat}"
        return EvaluationStatus(folder.path, "live", reason, epochs, runs)
    if report is not None and report.get("outcome") != "interrupted":
        runs = {name: _run_view(run) for name, run in report.get("runs", {}).items()}
        return EvaluationStatus(folder.path, report["outcome"], report.get("stop_reason", ""), epochs, runs)
    runs = _checkpointed_runs(folder, spec, epochs)
    when = "its report says so" if report is not None else _when(driver, None, now)
    return EvaluationStatus(folder.path, "interrupted", f"interrupted ({when}); {resume}", epochs, runs)


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("cell", "seed", "status", "epochs_done", "test_top1", "stopped_at_epoch", "error")
    return {k: run[k] for k in keys if k in run}


def _checkpointed_runs(folder: EvaluationDir, spec: dict[str, Any], epochs: int) -> dict[str, dict[str, Any]]:
    """Every planned run with the epochs its checkpoints hold: ``finished``, ``running`` (some) or ``pending``."""
    from ostr_ray.experiment.layout import evaluation_run_name

    runs = {}
    for cell in spec.get("cells", []):
        for seed in spec.get("seeds", []):
            history = folder.run_history(cell["id"], seed)
            done = int(history[-1].get("epoch", 0)) if history else 0
            status = "finished" if epochs and done >= epochs else "running" if done else "pending"
            top1 = history[-1].get("test_top1") if history else None
            runs[evaluation_run_name(cell["id"], seed)] = {
                "cell": cell["id"],
                "seed": seed,
                "status": status,
                "epochs_done": done,
                "test_top1": top1,
            }
    return runs
