"""Trials waiting for resources: how many and what each asks for, so a launch that waits for nodes says so.

Tune keeps a trial ``PENDING`` until its actor runs: while Ray finds no node with its resources (a GPU node
the autoscaler has yet to start, a GPU another trial holds) and, for a few seconds, while a granted actor
starts (a worker process, its imports). Only the first is waiting. So a trial counts once it has been pending
for :data:`WAIT_GRACE_S`, and no more trials count than have no resources granted: Tune asks for each trial's
resources with one placement group, so this driver's placement groups that Ray created beyond its running
trials are trials starting, not waiting.

The driver's coordinator callback asks :class:`WaitWatch` at every turn of Tune's loop, tells its listeners
(the live view) when the answer changes and keeps it in the launch's ``waiting.json`` for ``ostr-ray status``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ostr_ray.experiment import LaunchDir
from ostr_ray.experiment.layout import WAITING
from ostr_ray.orchestration.node_types import describe_resources

WAIT_GRACE_S = 5.0
"""How long a trial is pending before it counts as waiting (every trial is pending for a moment at the start)."""
CHECK_EVERY_S = 1.0
"""The most often the watch looks (and asks Ray for its placement groups), however fast Tune's loop turns."""


@dataclass(frozen=True)
class Waiting:
    """How many trials wait for resources, what each asks for, and since when the longest has waited."""

    count: int = 0
    resources: str = ""
    """Per trial, as read: ``1 CPU, 1 GPU each``."""
    since: float | None = None
    """Wall-clock time the longest-waiting trial became pending."""

    def line(self) -> str:
        """``2 trials waiting for resources: 1 CPU, 1 GPU each`` (or that none waits any more)."""
        if not self.count:
            return "no trial waiting for resources now"
        return f"{self.count} trial{'s' if self.count != 1 else ''} waiting for resources: {self.resources}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Waiting:
        return cls(int(data.get("count", 0)), str(data.get("resources", "")), data.get("since"))


def trial_resources(trial: Any) -> dict[str, float]:
    """What a Tune trial asks Ray for (all bundles of its placement group together)."""
    factory = getattr(trial, "placement_group_factory", None)
    return dict(getattr(factory, "required_resources", None) or {})


def per_trial(trials: list[Any]) -> str:
    """``1 CPU, 1 GPU each``; trials asking for different things are counted apart (``2 x 1 CPU; 1 x 1 GPU``)."""
    asks = Counter(describe_resources(trial_resources(t)) for t in trials)
    if len(asks) == 1:
        return f"{next(iter(asks))} each"
    return "; ".join(f"{n} x {ask}" for ask, n in asks.most_common())


def granted_placement_groups() -> int:
    """This driver's placement groups that Ray has created (their resources held); 0 when Ray cannot say."""
    try:
        import ray
        from ray.util.placement_group import placement_group_table

        job = ray.get_runtime_context().get_job_id()
        table = placement_group_table()
    except Exception:  # a driver without the GCS table (Ray Client): count every long-pending trial
        return 0
    return sum(1 for pg_id, pg in table.items() if pg_id.endswith(job) and pg.get("state") == "CREATED")


class WaitWatch:
    """Remembers since when each trial is pending; :meth:`update` says how many wait for resources."""

    def __init__(
        self,
        grace_s: float = WAIT_GRACE_S,
        check_every_s: float = CHECK_EVERY_S,
        granted: Callable[[], int] = granted_placement_groups,
    ) -> None:
        self.grace_s, self.check_every_s, self.granted = grace_s, check_every_s, granted
        self.current: Waiting | None = None
        """The last answer (None before the first)."""
        self._pending_since: dict[str, float] = {}
        self._checked_at = -math.inf

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the callback that holds the watch: a restored driver watches afresh (its trials are
        pending again, not waiting since before the interruption)."""
        return {**self.__dict__, "current": None, "_pending_since": {}, "_checked_at": -math.inf}

    def update(self, trials: list[Any], now: float | None = None) -> Waiting | None:
        """The trials waiting now, when that differs from the last answer (the first call always answers);
        None when nothing changed or it is too soon to look again."""
        now = time.time() if now is None else now
        if now - self._checked_at < self.check_every_s:
            return None
        self._checked_at = now
        pending = {t.trial_id: t for t in trials if t.status == "PENDING"}
        self._pending_since = {tid: self._pending_since.get(tid, now) for tid in pending}
        long = sorted((since, tid) for tid, since in self._pending_since.items() if now - since >= self.grace_s)
        count = 0
        if long:
            starting = max(0, self.granted() - sum(1 for t in trials if t.status == "RUNNING"))
            count = max(0, min(len(long), len(pending) - starting))
        waiting = Waiting()
        if count:
            waiting = Waiting(count, per_trial([pending[tid] for _, tid in long[:count]]), long[0][0])
        if self.current is not None and (waiting.count, waiting.resources) == (
            self.current.count,
            self.current.resources,
        ):
            return None
        self.current = waiting
        return waiting


def write_waiting(experiment_path: str, waiting: Waiting) -> None:
    LaunchDir(experiment_path).storage.write_text(WAITING, json.dumps(waiting.to_json()))


def read_waiting(experiment_path: str) -> Waiting | None:
    """The launch's last record of waiting trials (None when it has none or it cannot be read)."""
    text = LaunchDir(experiment_path).storage.read_text(WAITING)
    try:
        return Waiting.from_json(json.loads(text)) if text else None
    except (ValueError, TypeError, AttributeError):
        return None
