"""``ostr-ray status``: where a launch stands, read from its directory (no Ray needed).

States: ``live`` (its driver holds the directory and beats), ``starting`` (live, before the first epoch was
summarised), ``interrupted`` (the driver is gone before the launch ended: Ctrl-C, SIGTERM, a crash, a killed
node), and, from its report, ``finished``, ``partial`` (some trials failed) or ``failed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ostr_ray.core.criteria import DEFAULT_CRITERION
from ostr_ray.core.summaries import LaunchSummary
from ostr_ray.experiment import LaunchDir, LaunchDirError, LaunchReport
from ostr_ray.orchestration.ownership import driver_alive


@dataclass
class LaunchStatus:
    path: str
    state: str
    stop_reason: str
    summary: LaunchSummary
    report: LaunchReport | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.report.to_json() if self.report else self.summary.summary_json()
        return {**data, "experiment_path": self.path, "state": self.state, "stop_reason": self.stop_reason}


def launch_status(path: str, now: float | None = None) -> LaunchStatus:
    launch = LaunchDir(path)
    if not launch.exists():
        raise LaunchDirError(f"no launch directory at {path}")
    now = now or time.time()
    driver = launch.read_driver()
    snapshot = launch.read_snapshot(required=False)
    if driver_alive(driver, now):
        summary = snapshot or _starting_summary(launch)
        state = "live" if snapshot is not None and snapshot.variants else "starting"
        return LaunchStatus(launch.path, state, _live_reason(driver, snapshot, now), summary)
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


def _live_reason(driver: Any, snapshot: Any, now: float) -> str:
    progress = "before its first epoch" if snapshot is None or not snapshot.variants else "running"
    return f"{progress}: driver PID {driver.pid} on {driver.host}, heartbeat {now - driver.heartbeat_at:.0f} s ago"


def _when(driver: Any, snapshot: Any, now: float) -> str:
    last = max(t for t in (driver and driver.heartbeat_at, snapshot and snapshot.updated_at, 0.0) if t is not None)
    return f"last sign of life {now - last:.0f} s ago" if last else "no sign of life recorded"
