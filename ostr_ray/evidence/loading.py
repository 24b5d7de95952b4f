"""Reading a finished launch: its experiment files, every seed's epoch reports, and the cells' ground truth.

Input is a launch's experiment directory (local or a pyarrow URI): ``report.json`` (required), ``history.json``
and ``launch.json`` (optional).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.evidence.stats import canonical_nb201

LAUNCH_FILE, REPORT_FILE, HISTORY_FILE = "launch.json", "report.json", "history.json"


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
        if self.table is not None:
            return list(self.table.metrics)
        return list(dict.fromkeys(m for metrics in self.known.values() for m in metrics))

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
    directory and its parent (launch.json keeps the path as typed at launch time); ``None`` if none exists."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    bases = [Path.cwd()]
    if "://" not in experiment_path:
        bases += [Path(experiment_path), Path(experiment_path).parent]
    return next((base / path for base in bases if (base / path).exists()), None)


def recorded_truth(variant: str, report: Mapping[str, Any], seeds: Sequence[SeedRun]) -> dict[str, dict]:
    """Cell -> metrics for every cell the launch itself looked up (report.json and per-epoch reports)."""
    known: dict[str, dict] = {}
    data = report.get("variants", {}).get(variant, {})
    truth = report.get("ground_truth", {}).get(variant) or {}
    for seed, crits in (truth.get("seeds") or {}).items():
        genotypes = data.get("seeds", {}).get(str(seed), {}).get("genotypes", {})
        for crit, metrics in (crits or {}).items():
            if metrics and genotypes.get(crit):
                known[genotypes[crit]] = metrics
    if truth.get("consensus") and data.get("consensus_genotype"):
        known[data["consensus_genotype"]] = truth["consensus"]
    for crit, metrics in (truth.get("criterion_consensus") or {}).items():
        cell = (data.get("criterion_consensus") or {}).get(crit)
        if cell and metrics:
            known[cell] = metrics
    for run in seeds:
        for rep in run.reports:
            for crit, metrics in (rep.get("ground_truth") or {}).items():
                cell = (rep.get("genotypes") or {}).get(crit)
                if cell and metrics:
                    known[cell] = metrics
    return known


# ============================================================================================ experiment data


@dataclass
class SeedRun:
    """One seed of one variant: how it ended and its epoch reports (JSON form, oldest first)."""

    seed: int
    status: str = "finished"
    reason: str = ""
    last_epoch: int = 0
    stop_reason: str | None = None
    final: dict[str, str] = field(default_factory=dict)
    """criterion -> final cell (see :mod:`ostr_ray.evidence.analysis`)."""
    reports: list[dict[str, Any]] = field(default_factory=list)

    def selections(self, criterion: str) -> list[tuple[int, str]]:
        """``(epoch, cell)`` of every report carrying a cell for ``criterion``, oldest first."""
        out = []
        for rep in self.reports:
            cell = (rep.get("genotypes") or {}).get(criterion)
            if cell:
                out.append((int(rep["epoch"]), cell))
        return out

    def final_report(self, criterion: str) -> dict[str, Any] | None:
        for rep in reversed(self.reports):
            if (rep.get("genotypes") or {}).get(criterion):
                return rep
        return None

    def cell_at(self, epoch: int, criterion: str) -> str | None:
        """The cell of the latest report with epoch <= ``epoch`` (carried forward after an early stop)."""
        latest = None
        for rep in self.reports:
            if int(rep["epoch"]) <= epoch:
                latest = rep
        if latest is None:
            return None
        return (latest.get("genotypes") or {}).get(criterion) or None

    @property
    def epoch_seconds(self) -> float:
        return float(sum(float(r.get("epoch_seconds") or 0.0) for r in self.reports))


def collect_seeds(report: Mapping[str, Any], history: Mapping[str, Any] | None, variant: str) -> list[SeedRun]:
    """Every seed of ``variant`` from report.json, with its epoch reports from history.json when present."""
    runs: dict[int, SeedRun] = {}
    for seed, data in (report.get("variants", {}).get(variant, {}).get("seeds") or {}).items():
        runs[int(seed)] = SeedRun(
            seed=int(seed),
            status=data.get("status", "finished"),
            reason=data.get("reason") or "",
            last_epoch=int(data.get("last_epoch") or 0),
            stop_reason=data.get("stop_reason"),
            final={c: g for c, g in (data.get("genotypes") or {}).items() if g},
        )
    for trial in (history or {}).get("trials", []):
        if trial.get("variant") != variant:
            continue
        seed = int(trial["seed"])
        run = runs.setdefault(seed, SeedRun(seed=seed, status=trial.get("status", "finished")))
        if trial.get("status"):
            run.status = trial["status"]
            run.reason = trial.get("reason") or run.reason
        run.reports = sorted(trial.get("reports", []), key=lambda r: int(r["epoch"]))
        if run.reports:
            run.last_epoch = max(run.last_epoch, int(run.reports[-1]["epoch"]))
            run.stop_reason = run.stop_reason or run.reports[-1].get("stop_reason")
            for crit in {c for r in run.reports for c, g in (r.get("genotypes") or {}).items() if g}:
                run.final[crit] = run.selections(crit)[-1][1]
    return [runs[s] for s in sorted(runs)]


@dataclass
class Experiment:
    path: str
    report: dict[str, Any]
    launch: dict[str, Any]
    history: dict[str, Any] | None


def _read_text(path: str, name: str) -> str | None:
    """A file of the experiment directory (local or a pyarrow URI); ``None`` when it does not exist."""
    if "://" in path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(path)
        if fs.get_file_info(f"{root}/{name}").type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(f"{root}/{name}") as stream:
            return stream.read().decode()
    file = Path(path) / name
    return file.read_text() if file.is_file() else None


def load_experiment(path: str | Path) -> Experiment:
    """report.json (required), launch.json and history.json (optional) of an experiment directory."""
    path = str(path) if "://" in str(path) else str(Path(path).resolve())
    text = _read_text(path, REPORT_FILE)
    if text is None:
        raise EvidenceError(f"no {REPORT_FILE} in {path}; is the launch finished?")
    launch_text = _read_text(path, LAUNCH_FILE)
    history_text = _read_text(path, HISTORY_FILE)
    try:
        return Experiment(
            path=path,
            report=json.loads(text),
            launch=json.loads(launch_text) if launch_text else {},
            history=json.loads(history_text) if history_text else None,
        )
    except json.JSONDecodeError as err:
        raise EvidenceError(f"unreadable JSON in {path}: {err}") from None
