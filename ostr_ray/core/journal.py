"""Where the coordinator keeps the past it no longer needs for its statistics: every epoch report of every trial
and every variant's full :class:`~ostr_ray.core.consensus.EpochStats`.

The statistics only need each seed's newest reports (see :mod:`.coordinator`), so a long launch keeps the rest
out of memory and out of the state Tune pickles into its experiment checkpoint: :class:`DiskJournal` appends
one pickled record per report or epoch to a local folder (the launch's own, named in experiment/layout.py) and
reads a trial back only when a view asks (a trial's close in MLflow, ``history.json`` at the end).
:class:`MemoryJournal` keeps them in memory: a coordinator rebuilt from ``history.json`` and the unit tests.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any, Protocol

from ostr_ray.core.consensus import EpochStats
from ostr_ray.core.events import EpochReport


class Journal(Protocol):
    """The past of a launch, as the coordinator hands it over: appended once, read back rarely."""

    def add_report(self, variant: str, seed: int, report: EpochReport) -> None: ...

    def report_dicts(self, variant: str, seed: int) -> list[dict[str, Any]]:
        """A trial's reports in JSON form, oldest first; a re-sent epoch replaces the earlier one."""

    def add_stats(self, stats: EpochStats) -> None: ...

    def stats_dicts(self, variant: str) -> list[dict[str, Any]]: ...

    def clear(self) -> None: ...


class MemoryJournal:
    """The journal in memory (JSON forms, so reading back never aliases what the coordinator holds)."""

    def __init__(self) -> None:
        self._reports: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
        self._stats: dict[str, list[dict[str, Any]]] = {}

    def add_report(self, variant: str, seed: int, report: EpochReport) -> None:
        self._reports.setdefault((variant, int(seed)), {})[int(report.epoch)] = report.to_json()

    def report_dicts(self, variant: str, seed: int) -> list[dict[str, Any]]:
        reports = self._reports.get((variant, int(seed)), {})
        return [reports[e] for e in sorted(reports)]

    def add_stats(self, stats: EpochStats) -> None:
        self._stats.setdefault(stats.variant, []).append(stats.to_json())

    def stats_dicts(self, variant: str) -> list[dict[str, Any]]:
        return list(self._stats.get(variant, []))

    def clear(self) -> None:
        self._reports.clear()
        self._stats.clear()


class DiskJournal:
    """The journal as appended pickles under ``directory`` (local disk, the driver's own; created on first write).

    Pickle, not JSON: a DARTS report costs ~0.1 ms to append instead of ~4 ms, and only this driver (or the
    one resuming it) reads the files back. Appending is one short ``open(..., "ab")`` per record, so nothing
    written is rewritten, and a killed driver loses at most the record it was writing (skipped on reading).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DiskJournal({str(self.directory)!r})"

    def _file(self, name: str) -> Path:
        return self.directory / f"{name.replace('/', '_')}.pkl"

    def _append(self, name: str, record: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._file(name), "ab") as f:
            f.write(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))

    def _read(self, name: str) -> list[Any]:
        records = []
        try:
            with open(self._file(name), "rb") as f:
                while True:
                    records.append(pickle.load(f))
        except FileNotFoundError:
            pass
        except (EOFError, pickle.UnpicklingError, ValueError):
            pass  # the end, or the record a killed driver was writing
        return records

    def add_report(self, variant: str, seed: int, report: EpochReport) -> None:
        self._append(f"{variant}-seed{int(seed)}", report)

    def report_dicts(self, variant: str, seed: int) -> list[dict[str, Any]]:
        reports = {int(r.epoch): r for r in self._read(f"{variant}-seed{int(seed)}")}
        return [reports[e].to_json() for e in sorted(reports)]

    def add_stats(self, stats: EpochStats) -> None:
        self._append(f"{stats.variant}.stats", stats)

    def stats_dicts(self, variant: str) -> list[dict[str, Any]]:
        stats = {int(s.epoch): s for s in self._read(f"{variant}.stats")}
        return [stats[e].to_json() for e in sorted(stats)]

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
