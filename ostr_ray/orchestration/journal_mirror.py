"""The driver's journal of a launch in object storage: local appends, mirrored to the bucket in segments.

A launch on ``s3://`` cannot append to its journal where it lives (object storage has no append), so the
driver journals into a local folder (:class:`~ostr_ray.core.journal.DiskJournal`) as always and, at every
experiment checkpoint Tune takes, uploads what was appended since as one new segment under the launch's
``driver-journal/``. A resume on a new head (its local folder empty) replays the segments first, so the past
epochs' statistics and reports survive the loss of the head, not only the trials' checkpoints. Replaying is
idempotent (the journal keeps one record per epoch), so a segment uploaded twice or a re-sent epoch does no harm.
Upload cost: each record once, in one request per checkpoint.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ostr_ray.core.consensus import EpochStats
from ostr_ray.core.events import EpochReport
from ostr_ray.core.journal import DiskJournal
from ostr_ray.experiment.storage import Storage

SEGMENT = "segment-{:08d}.pkl"


class MirroredJournal:
    """A :class:`DiskJournal` whose records also go to ``remote`` in segments (:meth:`flush`)."""

    def __init__(self, local: DiskJournal, remote: Storage) -> None:
        self.local, self.remote = local, remote
        self._pending: list[EpochReport | EpochStats | tuple[str, int, EpochReport]] = []
        self._segments = len(remote.names())

    @property
    def directory(self) -> Path:
        return self.local.directory

    def add_report(self, variant: str, seed: int, report: EpochReport) -> None:
        self.local.add_report(variant, seed, report)
        self._pending.append((variant, int(seed), report))

    def report_dicts(self, variant: str, seed: int) -> list[dict[str, Any]]:
        return self.local.report_dicts(variant, seed)

    def add_stats(self, stats: EpochStats) -> None:
        self.local.add_stats(stats)
        self._pending.append(stats)

    def stats_dicts(self, variant: str) -> list[dict[str, Any]]:
        return self.local.stats_dicts(variant)

    def clear(self) -> None:
        self.local.clear()
        self.remote.remove()
        self._pending, self._segments = [], 0

    def flush(self) -> None:
        """Upload what was appended since the last flush, as the next segment."""
        if not self._pending:
            return
        data = pickle.dumps(self._pending, protocol=pickle.HIGHEST_PROTOCOL)
        self.remote.write_bytes(SEGMENT.format(self._segments), data)
        self._pending, self._segments = [], self._segments + 1

    def restore(self) -> int:
        """Replay the remote segments into an empty local journal (a new head); returns the records replayed."""
        if self.local.directory.exists() and any(self.local.directory.iterdir()):
            return 0  # this machine's own journal: it holds everything up to the last record written
        replayed = 0
        for name in self.remote.names():  # sorted: segments in the order they were written
            data = self.remote.read_bytes(name)
            for record in pickle.loads(data) if data else []:
                if isinstance(record, EpochStats):
                    self.local.add_stats(record)
                else:
                    self.local.add_report(*record)
                replayed += 1
        return replayed
