"""``ostr-ray status``: where a launch stands, read from its directory (no Ray needed)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ostr_ray.experiment import CoordinatorSnapshot, LaunchDir, LaunchReport


@dataclass
class LaunchStatus:
    """A launch's latest summary and whether it finished."""

    path: str
    state: str
    """``finished`` (its report.json exists) or ``unfinished`` (running, or interrupted and resumable)."""
    stop_reason: str
    summary: CoordinatorSnapshot
    report: LaunchReport | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.report.to_json() if self.report else self.summary.to_json()
        return {**data, "experiment_path": self.path, "state": self.state, "stop_reason": self.stop_reason}


def launch_status(path: str, now: float | None = None) -> LaunchStatus:
    launch = LaunchDir(path)
    snapshot = launch.read_snapshot()
    report = launch.read_report(required=False)
    if report is not None:
        return LaunchStatus(launch.path, "finished", report.stop_reason, snapshot, report)
    age = (now or time.time()) - snapshot.updated_at if snapshot.updated_at is not None else None
    when = f"last update {age:.0f} s ago" if age is not None else "last update time unknown"
    reason = f"not finished ({when}): running, or interrupted; resume: ostr-ray launch --resume {path}"
    return LaunchStatus(launch.path, "unfinished", reason, snapshot)
