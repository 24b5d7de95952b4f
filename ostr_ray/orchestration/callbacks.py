"""The driver side of a launch inside Ray Tune: the coordinator as a ``tune.Callback`` and a ``tune.Stopper``.

The coordinator's state travels in Tune's experiment state through ``get_state``/``set_state``, so a
restored experiment continues with every epoch it had summarised. That state is the coordinator's compact one
(O(seeds)); the reports and statistics of past epochs go to the launch's ``driver-journal/`` (see
:mod:`ostr_ray.core.journal`). Its snapshot (``coordinator.json``, O(seeds) to write) is rewritten at every
decision (a summarised epoch, a trial that ended) and otherwise at most every :data:`SNAPSHOT_EVERY_S`.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.core.events import call
from ostr_ray.core.journal import DiskJournal
from ostr_ray.experiment import LaunchDir
from ostr_ray.experiment.layout import DRIVER_JOURNAL
from ostr_ray.experiment.storage import Storage, add_mirror
from ostr_ray.orchestration.capacity import WaitWatch, write_waiting
from ostr_ray.orchestration.journal_mirror import MirroredJournal
from ostr_ray.orchestration.trial import FAILED_KEY, STOP_KEY, failed_seeds_in, reports_in, trial_seeds

SNAPSHOT_EVERY_S = 2.0
"""The most often a plain epoch report rewrites ``coordinator.json`` (decisions always do)."""


def trial_keys(trial: Any) -> list[TrialKey]:
    """The (variant, seed) keys of every seed a Tune trial runs (one, or a seed group)."""
    params = trial.config["trial"]
    return [TrialKey(params["variant"], seed) for seed in trial_seeds(params)]


class CoordinatorCallback(tune.Callback):
    """Feeds every trial's epoch reports to the :class:`Coordinator`; snapshots it beside the experiment.

    Listeners (the live view, the MLflow recorder) get ``run_in_background()`` and ``drain()`` where they have
    them (at the first result and at the experiment's end), ``on_trial_report(key, report)`` once per epoch of
    each seed (a retried trial re-sends the epochs it had reported: the coordinator takes them again, the
    listeners do not see them twice; a restored driver's new listeners do get them, once),
    ``on_epoch_stats(stats)``, and, where they have them, ``on_trial_retried(key, cause, resumes_after)`` when
    Tune retries a failed trial (a lost node, a killed worker) and ``on_trial_finished(key, status, reason)``
    once a trial ends (finished, stopped or failed).
    """

    def __init__(self, coordinator: Coordinator, experiment_path: str) -> None:
        self.coordinator = coordinator
        self.experiment_path = experiment_path
        self.view: Any = None
        self.listeners: list[Any] = []
        self._snapshot_at = 0.0
        self._snapshot_due = False
        self._relayed: dict[TrialKey, int] = {}
        """The last epoch each seed's listeners were given (process-local, like the listeners)."""

    def __getstate__(self) -> dict[str, Any]:  # the live view and listeners are process-local
        return {**self.__dict__, "view": None, "listeners": [], "_relayed": {}}

    def journal_path(self) -> Path:
        """The launch's ``driver-journal/``; a remote launch journals into a local temporary folder (appending
        to object storage is not possible) mirrored to its ``driver-journal/`` (see :mod:`.journal_mirror`)."""
        if not Storage(self.experiment_path).is_remote:
            return Path(LaunchDir(self.experiment_path).file(DRIVER_JOURNAL))
        uri = hashlib.sha1(self.experiment_path.encode()).hexdigest()[:12]  # s3://a/x and s3://b/x: two folders
        return Path(tempfile.gettempdir()) / "ostr-ray-journals" / f"{Path(self.experiment_path).name}-{uri}"

    def _use_journal(self, *, keep: bool = False) -> None:
        """The coordinator journals into this launch's folder (again after a restore or a moved directory); a
        remote launch's restored journal is first replayed from the bucket where this machine has none."""
        path = self.journal_path()
        if getattr(self.coordinator.journal, "directory", None) == path:
            return
        journal: Any = DiskJournal(path)
        launch = LaunchDir(self.experiment_path)
        if launch.is_remote:
            journal = MirroredJournal(journal, launch.storage.child(DRIVER_JOURNAL))
            if keep:
                journal.restore()
        self.coordinator.use_journal(journal, keep=keep)

    def _flush_journal(self) -> None:
        call([self.coordinator.journal], "flush")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._remember_staging(trial)
        self._use_journal()
        call(self.listeners, "run_in_background")  # the MLflow recorder: its store calls off the driver's loop
        variant = trial.config["trial"]["variant"]
        new_stats = []
        for report in reports_in(result):
            key = TrialKey(variant, report.seed)
            new_stats += self.coordinator.update(key, report)
            if report.epoch > self._relayed.get(key, 0):
                self._relayed[key] = report.epoch
                for listener in self.listeners:
                    listener.on_trial_report(key, report)
        failed = failed_seeds_in(result)
        if FAILED_KEY in result:
            failed.update(dict.fromkeys((k.seed for k in trial_keys(trial)), result[FAILED_KEY]))
        for seed, why in failed.items():
            new_stats += self.coordinator.mark_finished(TrialKey(variant, seed), "failed", why)
        self._relay_stats(new_stats)
        for seed in failed:
            self._relay_finished(TrialKey(variant, seed))
        self._snapshot(force=bool(new_stats or failed))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Tune's loop turns several times a second: a snapshot held back by the rate limit is written here, and
        trials waiting for resources (a node the autoscaler has yet to start) are recorded in ``waiting.json``
        and told to the listeners (``on_trials_waiting(count, line)``) whenever their number changes."""
        if self._snapshot_due:
            self._snapshot(force=False)
        if "_waits" not in self.__dict__:  # made here, not in __init__: a restored callback may predate it
            self._waits = WaitWatch()
        before = self._waits.current
        waiting = self._waits.update(trials)
        if waiting is not None:
            write_waiting(self.experiment_path, waiting)  # also the first answer: a resumed launch's old record
            if waiting.count or before is not None:
                call(self.listeners, "on_trials_waiting", waiting.count, waiting.line())

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune retries a trial that died (its node lost, its worker killed): one line per seed, not Ray's logs."""
        cause = retry_cause(trial)
        for key in trial_keys(trial):
            call(self.listeners, "on_trial_retried", key, cause, self._relayed.get(key, 0))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_seeds(trial, "finished", "")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_seeds(trial, "failed", failure_cause(trial))

    def _end_seeds(self, trial: Any, status: str, reason: str) -> None:
        """Every seed of the trial not yet ended (a failed one was relayed when it said so)."""
        for key in trial_keys(trial):
            if self.coordinator.trial_status(key)[0] == "running":
                self._relay_stats(self.coordinator.mark_finished(key, status, reason))
                self._relay_finished(key)
        self._snapshot()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._flush_journal()
        call(self.listeners, "drain")
        if self.view is not None:
            self.view.close()
        self._snapshot()

    def get_state(self) -> dict[str, Any]:
        """Tune checkpoints the experiment: the compact state, and a remote journal's new records uploaded."""
        self._flush_journal()
        return self.coordinator.compact_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._use_journal(keep=True)
        self.coordinator.load_state_dict(state)

    def _relay_stats(self, new_stats: list) -> None:
        for listener in self.listeners:
            for stats in new_stats:
                listener.on_epoch_stats(stats)

    def _relay_finished(self, key: TrialKey) -> None:
        status, reason = self.coordinator.trial_status(key)
        call(self.listeners, "on_trial_finished", key, status, reason)

    def _snapshot(self, force: bool = True) -> None:
        """Write ``coordinator.json`` (and refresh the live table): always when ``force``, else at most every
        :data:`SNAPSHOT_EVERY_S` (a report of 1,000 running seeds would otherwise rewrite all 1,000)."""
        now = time.monotonic()
        if not force and now - self._snapshot_at < SNAPSHOT_EVERY_S:
            self._snapshot_due = True
            return
        LaunchDir(self.experiment_path).write_snapshot(self.coordinator.summary())
        self._snapshot_at, self._snapshot_due = now, False
        if self.view is not None:
            self.view.refresh()

    def _remember_staging(self, trial: Any) -> None:
        """Tune's driver staging copy of the experiment must receive our files too (see experiment.storage)."""
        staging = getattr(getattr(trial, "storage", None), "experiment_driver_staging_path", None)
        if staging:
            add_mirror(self.experiment_path, staging)


def _error_lines(trial: Any) -> list[str]:
    """The non-empty lines of the trial's latest failure in Tune's error file (it appends one per failure)."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    latest = text.rsplit("Failure #", 1)[-1].split("\n", 1)[-1] if "Failure #" in text else text
    return [line.strip() for line in latest.splitlines() if line.strip()]


NODE_LOST = re.compile(
    r"node (has )?died|NodeDiedError|node .* (was )?(terminated|lost)|raylet .* died"
    r"|ActorUnavailableError|actor \S+ is unavailable|actor is temporarily unavailable",
    re.I,
)
"""How Ray says a trial's node went away: its node died (ActorDiedError's cause, NodeDiedError), or its actor
became unreachable (ActorUnavailableError: the usual first sign, before the node misses enough heartbeats to be
declared dead; a worker process that dies on a live node is an ActorDiedError without a node cause instead)."""


def retry_cause(trial: Any) -> str:
    """Why Tune retries ``trial``, in a few words: ``node 10.0.0.7 lost`` when the trial lost its node (the IP
    from Ray's error, else from the trial's last result), otherwise ``trial failed (<the error's first line>)``."""
    lines = _error_lines(trial)
    if any(NODE_LOST.search(line) for line in lines):
        named = next((m.group(1) for line in lines if (m := re.match(r"ip: (\S+)$", line))), None)
        ip = named or (getattr(trial, "last_result", None) or {}).get("node_ip")
        return f"node {ip} lost" if ip else "a node lost"
    return f"trial failed ({failure_cause(trial).removeprefix('failed after retries: ')})"


def failure_cause(trial: Any, limit: int = 240) -> str:
    """One line saying why a trial failed after its retries, from Tune's error file (its first line after
    ``Failure # n``: the exception, or Ray's memory monitor's verdict when it killed the worker)."""
    detail = next(iter(_error_lines(trial)), "the trial raised an error")
    if "running low on memory" in detail:
        detail = f"killed by Ray's memory monitor (out of memory): {detail}"
    detail = detail if len(detail) <= limit else detail[: limit - 1] + "…"
    return f"failed after retries: {detail}"


class ConsensusStopper(tune.Stopper):
    """Stops a trial once all its seeds have ended (Algorithm 1 or the schedule), and all trials once the
    consensus held."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get(STOP_KEY))

    def stop_all(self) -> bool:
        return self.coordinator.experiment_should_stop() is not None
