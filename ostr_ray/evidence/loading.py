"""Reading a finished launch through its records: the typed report, the launch spec, the coordinator's history,
every seed's epoch reports, and the cells' ground truth.

The experiment directory (local or a pyarrow URI) is read only through
:class:`~ostr_ray.experiment.LaunchDir`: the :class:`~ostr_ray.experiment.LaunchReport` (required), the
:class:`~ostr_ray.experiment.LaunchSpec` (optional; else the copy the report carries) and the history, rebuilt
as a :class:`~ostr_ray.core.coordinator.Coordinator` (optional).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.core.coordinator import Coordinator
from ostr_ray.core.events import EpochReport
from ostr_ray.core.nb201_bench import NB201_COLUMNS
from ostr_ray.evidence.stats import canonical_nb201
from ostr_ray.experiment import LaunchDir, LaunchDirError, LaunchReport, LaunchSpec


class EvidenceError(ValueError):
    """An experiment directory the evidence cannot be built from (one line, for the CLI)."""


# ============================================================================================ ground truth


class GroundTruth:
    """Cell -> metrics, from an NB201 table, or from accuracies a launch recorded (``known``).

    Only a table can answer for arbitrary cells (the single-edge neighbourhoods need it).
    """

    def __init__(
        self, table: Any = None, known: Mapping[str, Mapping[str, float]] | None = None, source: str = ""
    ) -> None:
        self.table = table
        self.known = {canonical_nb201(k): dict(v) for k, v in (known or {}).items()}
        self.source = source

    @property
    def has_table(self) -> bool:
        return self.table is not None

    @property
    def metrics(self) -> list[str]:
        """The metrics, the benchmark's own columns first in the papers' order (each data set's valid, then
        test), then any others in their source's order."""
        if self.table is not None:
            found = list(self.table.metrics)
        else:
            found = list(dict.fromkeys(m for metrics in self.known.values() for m in metrics))
        return [m for m in NB201_COLUMNS if m in found] + [m for m in found if m not in NB201_COLUMNS]

    def lookup(self, cell: str | None) -> dict[str, float] | None:
        if not cell:
            return None
        if self.table is not None:
            from ostr_ray.core.nb201_bench import NB201TableError

            try:
                return self.table.lookup(cell)
            except NB201TableError:
                return None
        try:
            return self.known.get(canonical_nb201(cell))
        except ValueError:
            return None

    def value(self, cell: str | None, metric: str) -> float:
        metrics = self.lookup(cell)
        value = metrics.get(metric) if metrics else None
        return math.nan if value is None else float(value)

    def optimal(self) -> dict[str, dict[str, Any]] | None:
        """Per metric the benchmark's best cell and its value (Table I's "optimal" row); ``None`` without a
        table held in memory whole (a benchmark file read cell by cell would need every cell)."""
        if self.table is None or not self.table.complete:
            return None
        best = {m: self.table.best(m) for m in self.metrics}
        return {m: {"cell": entry.arch, "value": entry.value} for m, entry in best.items()}

    def primary_metric(self, requested: str | None = None) -> str | None:
        metrics = self.metrics
        if requested:
            if requested not in metrics:
                raise EvidenceError(
                    f"metric {requested!r} is not in the ground truth; metrics are {', '.join(metrics) or 'none'}"
                )
            return requested
        return next((m for m in metrics if "test" in m), metrics[0] if metrics else None)


def resolve_table_path(value: str, experiment_path: str) -> Path | None:
    """A table path as given, or a relative one resolved against the working directory, the experiment
    directory and its parent (the launch spec keeps the path as typed at launch time); ``None`` if none exists."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    bases = [Path.cwd()]
    if "://" not in experiment_path:
        bases += [Path(experiment_path), Path(experiment_path).parent]
    return next((base / path for base in bases if (base / path).exists()), None)


def recorded_truth(variant: str, report: LaunchReport, seeds: Sequence[SeedRun]) -> dict[str, dict]:
    """Cell -> metrics for every cell the launch itself looked up (the report's ``ground_truth`` and every
    epoch report's)."""
    known: dict[str, dict] = {}
    summary = report.variants.get(variant)
    truth = report.ground_truth.get(variant) or {}
    if summary is not None:
        for seed, crits in (truth.get("seeds") or {}).items():
            seed_summary = summary.seeds.get(int(seed))
            genotypes = seed_summary.genotypes if seed_summary else {}
            for crit, metrics in (crits or {}).items():
                if metrics and genotypes.get(crit):
                    known[genotypes[crit]] = metrics
        if truth.get("consensus") and summary.consensus_genotype:
            known[summary.consensus_genotype] = truth["consensus"]
        for crit, metrics in (truth.get("criterion_consensus") or {}).items():
            cell = summary.criterion_consensus.get(crit)
            if cell and metrics:
                known[cell] = metrics
    for run in seeds:
        for rep in run.reports:
            for crit, metrics in rep.ground_truth.items():
                cell = rep.genotypes.get(crit)
                if cell and metrics:
                    known[cell] = metrics
    return known


# ============================================================================================ experiment data


@dataclass
class SeedRun:
    """One seed of one variant: how it ended and its epoch reports (oldest first)."""

    seed: int
    status: str = "finished"
    reason: str = ""
    last_epoch: int = 0
    stop_reason: str | None = None
    final: dict[str, str] = field(default_factory=dict)
    """criterion -> final cell (see :mod:`ostr_ray.evidence.analysis`)."""
    reports: list[EpochReport] = field(default_factory=list)

    def selections(self, criterion: str) -> list[tuple[int, str]]:
        """``(epoch, cell)`` of every report carrying a cell for ``criterion``, oldest first."""
        return [(int(rep.epoch), rep.genotypes[criterion]) for rep in self.reports if rep.genotypes.get(criterion)]

    def final_report(self, criterion: str) -> EpochReport | None:
        return next((rep for rep in reversed(self.reports) if rep.genotypes.get(criterion)), None)

    def cell_at(self, epoch: int, criterion: str) -> str | None:
        """The cell of the latest report with epoch <= ``epoch`` (carried forward after an early stop)."""
        latest = None
        for rep in self.reports:
            if int(rep.epoch) <= epoch:
                latest = rep
        if latest is None:
            return None
        return latest.genotypes.get(criterion) or None

    @property
    def epoch_seconds(self) -> float:
        return float(sum(float(r.epoch_seconds or 0.0) for r in self.reports))


def collect_seeds(report: LaunchReport, history: Coordinator | None, variant: str) -> list[SeedRun]:
    """Every seed of ``variant`` from the report, with its epoch reports from the history when there is one."""
    runs: dict[int, SeedRun] = {}
    summary = report.variants.get(variant)
    for seed, data in (summary.seeds if summary else {}).items():
        runs[seed] = SeedRun(
            seed=seed,
            status=data.status,
            reason=data.reason,
            last_epoch=data.last_epoch,
            stop_reason=data.stop_reason,
            final=dict(data.genotypes),
        )
    for key in history.trial_keys() if history is not None else []:
        if key.variant != variant:
            continue
        status, reason = history.trial_status(key)
        run = runs.setdefault(key.seed, SeedRun(seed=key.seed, status=status))
        run.status, run.reason = status, reason or run.reason
        run.reports = history.trial_reports(key)
        if run.reports:
            run.last_epoch = max(run.last_epoch, int(run.reports[-1].epoch))
            run.stop_reason = run.stop_reason or run.reports[-1].stop_reason
            for crit in {c for r in run.reports for c, g in r.genotypes.items() if g}:
                run.final[crit] = run.selections(crit)[-1][1]
    return [runs[s] for s in sorted(runs)]


@dataclass
class Experiment:
    """A launch as its records hold it."""

    path: str
    report: LaunchReport
    spec: LaunchSpec | None
    """The launch spec: ``launch.json``, else the copy in the report, else ``None``."""
    history: Coordinator | None
    """The coordinator rebuilt from its saved state (every trial's epoch reports); ``None`` without one."""

    def variant_config(self, variant: str) -> dict[str, Any]:
        """The variant's resolved search settings (empty when the launch spec is unknown)."""
        return dict((self.spec.variants.get(variant) if self.spec else None) or {})


def load_experiment(path: str | Path) -> Experiment:
    """The launch report (required), the launch spec and the history (optional) of an experiment directory."""
    launch = LaunchDir(path)
    try:
        report = launch.read_report(required=False)
        if report is None:
            raise EvidenceError(f"no launch report in {launch.path}; is the launch finished?")
        spec = launch.read_spec(required=False) or report.launch
        state = launch.read_history()
    except LaunchDirError as err:
        raise EvidenceError(str(err)) from None
    return Experiment(path=launch.path, report=report, spec=spec, history=_coordinator(state, launch.path))


def _coordinator(state: dict[str, Any] | None, path: str) -> Coordinator | None:
    if state is None:
        return None
    try:
        return Coordinator.from_state(state)
    except (KeyError, TypeError, ValueError) as err:
        raise EvidenceError(f"the coordinator history in {path} cannot be read: {err}") from None
