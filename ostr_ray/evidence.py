"""Paper-style evidence from a finished launch: the tables and figures of the OStr-DARTS paper's analyses.

Input is a launch's experiment directory: ``report.json`` (final genotypes, consensus, cost), ``history.json``
(every seed's per-epoch :class:`~ostr_ray.events.EpochReport`) and ``launch.json`` (variant configs; the NB201
table path). Every criterion (``magnitude`` = DARTS, ``ostr``, ``ostr_star``, ``naive``) selects a cell from the
*same* supernets each epoch, so comparing criteria is an ablation of the selection rule alone.

Conventions used by every statistic below
-----------------------------------------
* **Seeds.** A variant's seeds are those in ``report.json``/``history.json``; seeds whose trial *failed* or that
  never produced a genotype are left out (listed under ``excluded``). Every "mean ± std" is over the included
  seeds, std being the population std (``ddof = STD_DDOF = 0``); NaN values (unknown cells) are ignored.
* **Final cell** of (seed, criterion): the genotype of the seed's last epoch report that carries one for that
  criterion (= ``report.json``'s per-seed genotype; without ``history.json`` that genotype is used).
* **Ground truth.** NB201 cells are looked up in an :class:`~ostr_ray.nb201_bench.NB201Table` (``--nb201-table``
  or the variant config's ``nb201_table``). Without a table, the accuracies the launch recorded itself
  (``report.json`` ``ground_truth`` and every epoch report's ``ground_truth``) are used where they cover a cell;
  the single-edge neighbourhood statistics need the table. The *primary metric* (figures, Table V/VI and the
  Spearman statistic) is ``metric`` if given, else the first table column whose name contains ``test``, else
  the first column; Table I shows every column.
* **Per-epoch curves** (Figures 9/10): at epoch ``e`` a seed contributes the cell of its latest report with
  epoch <= ``e`` (a seed that stopped early keeps its final cell, as in the coordinator); epochs run from 1 to
  the latest epoch of any seed. Mean and std are over the seeds that have a cell at that epoch.
* **Parameter-free ops** of a cell: its kept edges whose op is in ``space.parameter_free_ops`` minus ``'none'``
  (NB201: skip_connect, avg_pool_3x3; DARTS: skip_connect, max_pool_3x3, avg_pool_3x3), per cell type.

Tables (one row per criterion)
------------------------------
* **Table I** -- per metric: mean ± std of the final cells' ground truth; the criterion's consensus cell
  (``report.json`` ``criterion_consensus``, else the most common final cell, ties to the smallest string) and
  its ground truth; the search cost in trial-hours (``report.json``'s ``search_cost_trial_hours``, Tune's
  summed trial time, for a one-variant launch; for a launch of several variants the variant's own sum over
  its seeds of every epoch's ``epoch_seconds``, which the JSON also gives as ``epoch_trial_hours``); each
  seed's last epoch.
* **Table V** (selection ablation) -- primary-metric mean ± std; best and worst seed (value and seed);
  ``= consensus``: seeds whose final cell equals the consensus cell; ``distinct``: number of different final
  cells; ``pair agreement``: share of seed pairs with identical final cells; ``= DARTS``: seeds whose final
  cell equals *the same seed's* magnitude (DARTS) cell -- how often the selection rule alone changes the
  answer on the same supernet.
* **Table VI** (stability) -- ``final std``: std over seeds of the final cells' primary metric; ``2nd-half
  std``: for each seed, take its reports carrying a cell, in epoch order ``r_1..r_n``, keep the last
  ``ceil(n/2)`` (``r_{floor(n/2)+1}..r_n``), take the std (ddof 0) of their cells' primary metric, then average
  over seeds; ``changes``: per seed the number of ``i`` in ``2..n`` with ``cell(r_i) != cell(r_{i-1})`` (mean ±
  std over seeds); ``settled``: per seed the epoch of the first report from which every later report keeps
  the final cell (mean over seeds).
* **Figure 12** (single-edge Spearman) -- for each seed and criterion ``c`` the *reference* cell is ``c``'s own
  final cell. For each of its 6 edges the *single-edge neighbourhood* is the 4 cells obtained by putting each
  non-'none' op (skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3) on that edge and keeping the other
  five edges (the reference cell itself is one of the 4). ``rho`` is Spearman's correlation (average ranks
  for ties) between ``c``'s final-epoch scores of those 4 ops on that edge (magnitude: betas; ostr,
  ostr_star, naive: their score matrices, from the report whose cell is the final cell) and the 4 cells'
  primary-metric ground truth. A constant score or accuracy vector has no rho (counted as ``undefined``).
  Summary over all (seed, edge) pairs with a rho: mean ± std, share with rho > 0; ``best-op share`` is the
  share of (seed, edge) pairs whose chosen op gives the neighbourhood's highest accuracy.
* **DARTS / PC-DARTS** (no ground truth) -- per-criterion final cells per seed, agreement (share of seeds
  holding the most common final cell), parameter-free op counts (final and by epoch), and each final cell's
  evaluation network's parameters (M, without the auxiliary head) and multiply-adds (M, one 32x32 image,
  ``FlopCounterMode`` FLOPs / 2) at the DARTS CIFAR size ``C=36, layers=20`` unless told otherwise.

This module imports neither Ray nor MLflow (MLflow only lazily in :func:`log_to_mlflow`).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from searchspaces import get_space
from searchspaces.nb201 import EDGES as NB201_EDGES
from searchspaces.nb201 import OPS as NB201_OPS
from searchspaces.nb201 import NB201Genotype

CRITERIA = ("magnitude", "ostr", "ostr_star", "naive")
CRITERION_LABELS = {"magnitude": "DARTS (magnitude)", "ostr": "OStr", "ostr_star": "OStr*", "naive": "naive"}
STD_DDOF = 0
"""Population std over seeds (and over epochs) everywhere."""
NB201_CANDIDATE_OPS = tuple(op for op in NB201_OPS if op != "none")
"""The ops of a single-edge neighbourhood, in NB201's op order: skip_connect, nor_conv_1x1, nor_conv_3x3,
avg_pool_3x3."""
PAPER_EVAL_SIZE: dict[str, int] = {"C": 36, "layers": 20}
"""DARTS' CIFAR evaluation network (NetworkCIFAR) size for parameters and multiply-adds."""

LAUNCH_FILE, REPORT_FILE, HISTORY_FILE = "launch.json", "report.json", "history.json"
MARKDOWN_FILE = "evidence.md"
JSON_FILE = "evidence.json"
MLFLOW_RUNS_FILE = "mlflow_runs.json"
FIGURE_FILES = {
    "accuracy": "evidence_accuracy_by_epoch.png",
    "param_free": "evidence_param_free_ops.png",
    "spearman": "evidence_spearman.png",
}
NB201_LIKE = ("nb201",)


class EvidenceError(ValueError):
    """An experiment directory the evidence cannot be built from (one line, for the CLI)."""


# ============================================================================================ small statistics


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and population std of the finite values; ``(nan, nan)`` when there are none."""
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=STD_DDOF))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN when either vector is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two vectors of one length, got shapes {a.shape} and {b.shape}")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def modal(cells: Sequence[str]) -> tuple[str | None, float]:
    """Most common cell (ties: smallest string) and the share of ``cells`` holding it."""
    counts = Counter(c for c in cells if c)
    if not counts:
        return None, 0.0
    best = min(counts, key=lambda c: (-counts[c], c))
    return best, counts[best] / len(cells)


def pair_agreement(cells: Sequence[str]) -> float:
    """Share of unordered pairs of ``cells`` that are equal; NaN with fewer than two cells."""
    pairs = list(combinations(cells, 2))
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else math.nan


# ============================================================================================ cells


@lru_cache(maxsize=8192)
def _edge_ops(space: str, cell: str) -> dict[str, tuple[str, ...]]:
    """cell type -> ops of the cell's kept edges ('none' edges dropped), parsed once per string."""
    sp = get_space(space)
    choices = sp.parse_genotype(cell).edge_choices()
    return {cell_type: tuple(sp.ops[o] for o in edges.values()) for cell_type, edges in choices.items()}


def parameter_free_set(space: str) -> frozenset[str]:
    """The ops counted as parameter-free: the space's ``parameter_free_ops`` without ``'none'``."""
    return frozenset(get_space(space).parameter_free_ops) - {"none"}


def count_param_free(space: str, cell: str) -> dict[str, int]:
    """cell type -> number of the cell's kept edges whose op is parameter-free (see :func:`parameter_free_set`)."""
    free = parameter_free_set(space)
    return {cell_type: sum(op in free for op in ops) for cell_type, ops in _edge_ops(space, cell).items()}


def canonical_nb201(cell: str | NB201Genotype) -> str:
    return cell.to_str() if isinstance(cell, NB201Genotype) else NB201Genotype.from_string(cell).to_str()


def single_edge_neighbourhood(cell: str | NB201Genotype, edge: int) -> list[tuple[str, str]]:
    """``(op, cell string)`` for each non-'none' op on ``edge`` with the other five edges kept.

    Exactly 4 entries in :data:`NB201_CANDIDATE_OPS` order; the cell itself is the entry of its own op (when
    that op is not 'none').
    """
    genotype = cell if isinstance(cell, NB201Genotype) else NB201Genotype.from_string(cell)
    if not 0 <= edge < len(NB201_EDGES):
        raise ValueError(f"NB201 edge {edge} out of range 0..{len(NB201_EDGES) - 1}")
    out = []
    for op in NB201_CANDIDATE_OPS:
        ops = list(genotype.ops)
        ops[edge] = op
        out.append((op, NB201Genotype(tuple(ops)).to_str()))
    return out


def edge_name(edge: int) -> str:
    to, frm = NB201_EDGES[edge]
    return f"{to}<-{frm}"


def selection_scores(report: Mapping[str, Any], criterion: str) -> dict[str, np.ndarray] | None:
    """The matrices ``criterion`` selects by in an epoch report (JSON form): magnitude = betas, the others
    their ``scores`` entry; ``None`` when the report lacks them."""
    source = report.get("betas") if criterion == "magnitude" else (report.get("scores") or {}).get(criterion)
    if not source:
        return None
    return {cell: np.asarray(m, dtype=np.float64) for cell, m in source.items()}


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
            from ostr_ray.nb201_bench import NB201TableError

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
    """criterion -> final cell (see the module docstring)."""
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


def _write_bytes(path: str, name: str, data: bytes) -> str:
    if "://" in path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_output_stream(f"{root}/{name}") as stream:
            stream.write(data)
        return f"{path.rstrip('/')}/{name}"
    file = Path(path) / name
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, file)
    return str(file)


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


# ============================================================================================ statistics


def epoch_matrix(
    runs: Sequence[SeedRun], criterion: str, value: Callable[[str], float]
) -> tuple[list[int], np.ndarray]:
    """Epochs ``1..E`` and a (seeds, E) array of ``value(cell_at(epoch))`` (NaN where a seed has no cell)."""
    last = max((int(r["epoch"]) for run in runs for r in run.reports), default=0)
    epochs = list(range(1, last + 1))
    out = np.full((len(runs), len(epochs)), np.nan)
    cache: dict[str, float] = {}
    for i, run in enumerate(runs):
        for j, epoch in enumerate(epochs):
            cell = run.cell_at(epoch, criterion)
            if cell:
                if cell not in cache:
                    cache[cell] = float(value(cell))
                out[i, j] = cache[cell]
    return epochs, out


def _column_stats(matrix: np.ndarray) -> dict[str, list[float]]:
    means, stds, counts = [], [], []
    for column in matrix.T:
        m, s = mean_std(column)
        means.append(m)
        stds.append(s)
        counts.append(int(np.isfinite(column).sum()))
    return {"mean": means, "std": stds, "n": counts}


def stability(run: SeedRun, criterion: str, value: Callable[[str], float] | None) -> dict[str, Any]:
    """One seed's Table VI numbers (see the module docstring): changes, settled epoch, 2nd-half std."""
    sel = run.selections(criterion)
    if not sel:
        return {"changes": None, "settled_epoch": None, "late_std": math.nan}
    cells = [c for _, c in sel]
    changes = sum(a != b for a, b in zip(cells, cells[1:]))
    k = len(cells) - 1
    while k > 0 and cells[k - 1] == cells[-1]:
        k -= 1
    late = cells[len(cells) // 2 :]
    late_std = math.nan
    if value is not None:
        values = np.array([value(c) for c in late], dtype=np.float64)
        if np.isfinite(values).all():
            late_std = float(values.std(ddof=STD_DDOF))
    return {"changes": changes, "settled_epoch": sel[k][0], "late_std": late_std}


@dataclass
class EdgeCorrelation:
    """Figure 12's unit: one edge of one seed's reference cell under one criterion."""

    seed: int
    criterion: str
    edge: int
    chosen: str
    ops: tuple[str, ...]
    scores: list[float]
    accuracies: list[float]
    rho: float

    @property
    def chosen_is_best(self) -> bool:
        accs = np.asarray(self.accuracies)
        if not np.isfinite(accs).all():
            return False
        return self.chosen in self.ops and accs[self.ops.index(self.chosen)] == accs.max()

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "edge": self.edge,
            "edge_name": edge_name(self.edge),
            "chosen": self.chosen,
            "ops": list(self.ops),
            "scores": self.scores,
            "accuracies": self.accuracies,
            "rho": self.rho,
            "chosen_is_best": self.chosen_is_best,
        }


def edge_correlations(
    cell: str, scores: np.ndarray, truth: GroundTruth, metric: str, *, seed: int = 0, criterion: str = ""
) -> list[EdgeCorrelation]:
    """For each of the 6 edges of ``cell``: scores of the 4 non-'none' ops (row of the (6, 5) ``scores``)
    against the ground truth of the single-edge neighbourhood, and their Spearman rho."""
    genotype = NB201Genotype.from_string(cell)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(NB201_EDGES), len(NB201_OPS)):
        raise ValueError(f"NB201 scores must be {(len(NB201_EDGES), len(NB201_OPS))}, got {scores.shape}")
    columns = [NB201_OPS.index(op) for op in NB201_CANDIDATE_OPS]
    out = []
    for edge in range(len(NB201_EDGES)):
        neighbours = single_edge_neighbourhood(genotype, edge)
        accs = [truth.value(c, metric) for _, c in neighbours]
        row = [float(v) for v in scores[edge, columns]]
        out.append(
            EdgeCorrelation(
                seed=seed,
                criterion=criterion,
                edge=edge,
                chosen=genotype.ops[edge],
                ops=NB201_CANDIDATE_OPS,
                scores=row,
                accuracies=accs,
                rho=spearman(row, accs) if np.isfinite(accs).all() else math.nan,
            )
        )
    return out


def summarise_correlations(records: Sequence[EdgeCorrelation]) -> dict[str, Any]:
    """mean ± std of rho over (seed, edge) pairs with one, share positive, best-op share, per-edge means."""
    rhos = np.array([r.rho for r in records], dtype=np.float64)
    finite = rhos[np.isfinite(rhos)]
    m, s = mean_std(finite)
    per_edge_mean, per_edge_std = [], []
    for edge in range(len(NB201_EDGES)):
        em, es = mean_std(r.rho for r in records if r.edge == edge)
        per_edge_mean.append(em)
        per_edge_std.append(es)
    return {
        "mean": m,
        "std": s,
        "positive_share": float((finite > 0).mean()) if finite.size else math.nan,
        "n": int(finite.size),
        "n_undefined": int(len(records) - finite.size),
        "best_op_share": float(np.mean([r.chosen_is_best for r in records])) if records else math.nan,
        "per_edge": {"mean": per_edge_mean, "std": per_edge_std},
        "edges": [r.to_json() for r in records],
    }


@lru_cache(maxsize=256)
def eval_cost(space: str, cell: str, C: int = 36, layers: int = 20, image_size: int = 32) -> dict[str, float]:
    """Parameters (M, without the auxiliary head) and multiply-adds (M, one ``image_size`` image) of the
    DARTS-style evaluation network of ``cell``; FLOPs from ``torch.utils.flop_counter`` halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sp = get_space(space)
    network = sp.build_eval_network(sp.parse_genotype(cell), C=C, layers=layers, auxiliary=False).eval()
    params = sum(p.numel() for name, p in network.named_parameters() if not name.startswith("auxiliary_head"))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 3, image_size, image_size))
    return {"params_m": params / 1e6, "madds_m": counter.get_total_flops() / 2 / 1e6}


# ============================================================================================ per variant


def _criteria(runs: Sequence[SeedRun]) -> list[str]:
    present = {c for run in runs for c in run.final}
    return [c for c in CRITERIA if c in present] + sorted(present - set(CRITERIA))


def _stat(values: Mapping[Any, float]) -> dict[str, Any]:
    m, s = mean_std(values.values())
    return {"mean": m, "std": s, "values": {str(k): v for k, v in values.items()}}


def analyse_variant(
    variant: str,
    runs: Sequence[SeedRun],
    *,
    space: str,
    truth: GroundTruth | None = None,
    metric: str | None = None,
    consensus: Mapping[str, str | None] | None = None,
    cost_hours: float | None = None,
    eval_size: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Every statistic of one variant (JSON-ready apart from NaNs; see the module docstring).

    ``consensus`` is the per-criterion consensus cell (``report.json``'s ``criterion_consensus``); a missing
    one is the most common final cell. ``cost_hours`` is the search cost to show (default: the summed
    ``epoch_seconds`` of the variant's reports). ``eval_size`` (``C``, ``layers``) sizes DARTS eval networks; ``None``
    skips parameters and multiply-adds.
    """
    included = [r for r in runs if r.status != "failed" and r.final]
    kept = {r.seed for r in included}
    excluded = {
        str(r.seed): (f"failed: {r.reason}" if r.status == "failed" else "no genotype")
        for r in runs
        if r.seed not in kept
    }
    criteria = _criteria(included)
    seeds = [r.seed for r in included]
    has_history = any(r.reports for r in included)
    primary = truth.primary_metric(metric) if truth is not None else None
    if truth is not None and primary is None:
        truth = None
    consensus_cells = {}
    for crit in criteria:
        cells = [r.final[crit] for r in included if crit in r.final]
        consensus_cells[crit] = (consensus or {}).get(crit) or modal(cells)[0]
    epoch_hours = sum(r.epoch_seconds for r in runs) / 3600.0 if has_history else None
    if cost_hours is None:
        cost_hours = epoch_hours
    out: dict[str, Any] = {
        "variant": variant,
        "space": space,
        "seeds": seeds,
        "excluded": excluded,
        "criteria": criteria,
        "has_history": has_history,
        "truth_source": truth.source if truth is not None else None,
        "metric": primary,
        "metrics": truth.metrics if truth is not None else [],
        "finals": {str(r.seed): dict(r.final) for r in included},
        "stops": {
            str(r.seed): {"last_epoch": r.last_epoch, "stop_reason": r.stop_reason, "status": r.status} for r in runs
        },
        "consensus": consensus_cells,
        "cost_trial_hours": cost_hours,
        "epoch_trial_hours": epoch_hours,
    }

    def final_cells(crit: str) -> dict[int, str]:
        return {r.seed: r.final[crit] for r in included if crit in r.final}

    # -- structure: agreement, Table V's counting columns, parameter-free ops ---------------------------------
    structure, param_free_final = [], {}
    for crit in criteria:
        cells = final_cells(crit)
        magnitude = final_cells("magnitude")
        structure.append(
            {
                "criterion": crit,
                "n": len(cells),
                "agreement": modal(list(cells.values()))[1],
                "n_consensus": sum(c == consensus_cells[crit] for c in cells.values()),
                "n_distinct": len(set(cells.values())),
                "pair_agreement": pair_agreement([cells[s] for s in sorted(cells)]),
                "same_as_magnitude": sum(magnitude.get(s) == c for s, c in cells.items()) if magnitude else None,
            }
        )
        param_free_final[crit] = {
            t: _stat({s: count_param_free(space, c).get(t, 0) for s, c in cells.items()})
            for t in get_space(space).cell_types
        }
    out["structure"] = structure
    out["param_free_final"] = param_free_final

    # -- ground truth of the final cells: Tables I, V and VI ---------------------------------------------------
    if truth is not None:
        table_i, table_v = [], []
        for crit, struct in zip(criteria, structure):
            cells = final_cells(crit)
            per_metric = {m: _stat({s: truth.value(c, m) for s, c in cells.items()}) for m in truth.metrics}
            cons = consensus_cells[crit]
            table_i.append(
                {
                    "criterion": crit,
                    "n": len(cells),
                    "metrics": per_metric,
                    "consensus_cell": cons,
                    "consensus": {m: truth.value(cons, m) for m in truth.metrics},
                    "cost_trial_hours": cost_hours,
                    "stop_epochs": {str(r.seed): r.last_epoch for r in included},
                }
            )
            values = {s: v for s, v in per_metric[primary]["values"].items() if np.isfinite(v)}
            best = max(values, key=lambda s: (values[s], -int(s)), default=None)
            worst = min(values, key=lambda s: (values[s], int(s)), default=None)
            table_v.append(
                {
                    **struct,
                    "mean": per_metric[primary]["mean"],
                    "std": per_metric[primary]["std"],
                    "best": {"seed": int(best), "value": values[best]} if best is not None else None,
                    "worst": {"seed": int(worst), "value": values[worst]} if worst is not None else None,
                }
            )
        out["table_i"] = table_i
        out["table_v"] = table_v

    value = (lambda c: truth.value(c, primary)) if truth is not None else None
    rows = []
    for crit in criteria:
        per_seed = {r.seed: stability(r, crit, value) for r in included} if has_history else {}
        changes = {s: v["changes"] for s, v in per_seed.items() if v["changes"] is not None}
        settled = {s: v["settled_epoch"] for s, v in per_seed.items() if v["settled_epoch"] is not None}
        late = {s: v["late_std"] for s, v in per_seed.items()}
        final_values = [truth.value(c, primary) for c in final_cells(crit).values()] if truth is not None else []
        rows.append(
            {
                "criterion": crit,
                "final_std": mean_std(final_values)[1] if truth is not None else math.nan,
                "late_std": mean_std(late.values())[0] if late else math.nan,
                "late_std_per_seed": {str(s): v for s, v in late.items()},
                "changes": _stat(changes),
                "settled_epoch": _stat(settled),
            }
        )
    out["stability"] = rows

    # -- per-epoch curves (Figures 9/10) ---------------------------------------------------------------------
    if has_history:
        by_epoch: dict[str, Any] = {"accuracy": {}, "param_free": {}}
        cell_types = list(get_space(space).cell_types)
        by_epoch["epochs"] = list(range(1, max(int(r["epoch"]) for run in included for r in run.reports) + 1))
        for crit in criteria:
            if value is not None:
                by_epoch["accuracy"][crit] = _column_stats(epoch_matrix(included, crit, value)[1])
            by_epoch["param_free"][crit] = {
                t: _column_stats(epoch_matrix(included, crit, lambda c, t=t: count_param_free(space, c).get(t, 0))[1])
                for t in cell_types
            }
        out["by_epoch"] = by_epoch

    # -- Figure 12: single-edge Spearman ------------------------------------------------------------------------
    if space in NB201_LIKE and truth is not None and truth.has_table and has_history:
        spearman_out: dict[str, Any] = {"reference": "own final cell", "metric": primary, "criteria": {}}
        for crit in criteria:
            records: list[EdgeCorrelation] = []
            for run in included:
                rep = run.final_report(crit)
                scores = selection_scores(rep, crit) if rep else None
                if rep is None or scores is None or "normal" not in scores:
                    continue
                records += edge_correlations(
                    rep["genotypes"][crit], scores["normal"], truth, primary, seed=run.seed, criterion=crit
                )
            if records:
                spearman_out["criteria"][crit] = summarise_correlations(records)
        out["spearman"] = spearman_out

    # -- DARTS-style evaluation networks -----------------------------------------------------------------------
    if space not in NB201_LIKE and eval_size is not None:
        size = {"C": int(eval_size.get("C", 36)), "layers": int(eval_size.get("layers", 20))}
        costs = {}
        for crit in criteria:
            per = {s: eval_cost(space, c, **size) for s, c in final_cells(crit).items()}
            costs[crit] = {
                "params_m": _stat({s: v["params_m"] for s, v in per.items()}),
                "madds_m": _stat({s: v["madds_m"] for s, v in per.items()}),
            }
        out["eval_cost"] = {"size": size, "criteria": costs}
    return out


# ============================================================================================ whole launch


def variant_space(launch: Mapping[str, Any], variant: str, runs: Sequence[SeedRun]) -> str:
    config = (launch.get("variants") or {}).get(variant) or {}
    if config.get("space"):
        return str(config["space"])
    for run in runs:
        for rep in run.reports:
            if rep.get("space"):
                return str(rep["space"])
    cells = [c for run in runs for c in run.final.values()]
    return "nb201" if cells and cells[0].startswith("|") else "darts"


def build_evidence(
    path: str | Path | Experiment,
    *,
    nb201_table: str | Path | None = None,
    metric: str | None = None,
    eval_size: Mapping[str, int] | None = PAPER_EVAL_SIZE,
) -> dict[str, Any]:
    """Every variant's statistics for the experiment directory ``path`` (or a loaded :class:`Experiment`).

    ``nb201_table`` overrides the variant configs' ``nb201_table``; ``eval_size`` sizes the DARTS evaluation
    networks (``None`` skips them).
    """
    from ostr_ray.nb201_bench import load_nb201_table

    exp = path if isinstance(path, Experiment) else load_experiment(path)
    variants = list((exp.report.get("variants") or {}).keys())
    for trial in (exp.history or {}).get("trials", []):
        if trial.get("variant") not in variants:
            variants.append(trial["variant"])
    if not variants:
        raise EvidenceError(f"{exp.path}/{REPORT_FILE} lists no variants")
    notes: list[str] = []
    out: dict[str, Any] = {
        "name": exp.report.get("name") or Path(exp.path).name,
        "experiment_path": exp.path,
        "stop_reason": exp.report.get("stop_reason"),
        "search_cost_trial_hours": exp.report.get("search_cost_trial_hours"),
        "has_history": exp.history is not None,
        "notes": notes,
        "variants": {},
        "figures": [],
    }
    tables: dict[str, Any] = {}
    for variant in variants:
        runs = collect_seeds(exp.report, exp.history, variant)
        space = variant_space(exp.launch, variant, runs)
        truth = None
        if space in NB201_LIKE:
            config = (exp.launch.get("variants") or {}).get(variant) or {}
            table_arg = str(nb201_table) if nb201_table else config.get("nb201_table")
            if table_arg:
                resolved = Path(table_arg) if nb201_table else resolve_table_path(table_arg, exp.path)
                if resolved is None:
                    notes.append(f"{variant}: NB201 table {table_arg!r} from launch.json not found")
                else:
                    key = str(resolved)
                    if key not in tables:
                        tables[key] = load_nb201_table(resolved)
                    truth = GroundTruth(table=tables[key], source=key)
            if truth is None:
                known = recorded_truth(variant, exp.report, runs)
                if known:
                    truth = GroundTruth(known=known, source="accuracies recorded by the launch")
        variant_data = (exp.report.get("variants") or {}).get(variant) or {}
        cost = exp.report.get("search_cost_trial_hours") if len(variants) == 1 else None
        out["variants"][variant] = analyse_variant(
            variant,
            runs,
            space=space,
            truth=truth,
            metric=metric,
            consensus=variant_data.get("criterion_consensus") or {},
            cost_hours=cost,
            eval_size=eval_size,
        )
    if exp.history is None:
        notes.append(f"no {HISTORY_FILE}: per-epoch figures, stability over epochs and Spearman are skipped")
    return out


def to_json(evidence: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """``evidence`` (plus ``extra`` keys) with NaN/inf as ``None`` and numpy values as Python numbers."""
    return _clean({**evidence, **extra})


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ============================================================================================ tables


@dataclass
class TableSpec:
    """A rendered-agnostic table: title, header, string rows, and a footnote."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _pm(stat: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "-"
    return f"{stat['mean']:.{digits}f} ± {_num(stat.get('std'), digits)}"


def _label(crit: str) -> str:
    return CRITERION_LABELS.get(crit, crit)


def _short(cell: str | None) -> str:
    if not cell:
        return "-"
    text = cell.replace("nor_conv_", "c").replace("skip_connect", "skip").replace("avg_pool_3x3", "avg")
    return text.replace("sep_conv_", "sep").replace("dil_conv_", "dil").replace("max_pool_3x3", "max")


def variant_tables(data: Mapping[str, Any]) -> list[TableSpec]:
    """The tables of one variant, in report order."""
    tables: list[TableSpec] = []
    criteria = data["criteria"]
    n = len(data["seeds"])
    metric = data.get("metric")
    if data.get("table_i"):
        metrics = data["metrics"]
        rows = []
        for row in data["table_i"]:
            stops = ",".join(str(e) for _, e in sorted(row["stop_epochs"].items(), key=lambda kv: int(kv[0])))
            rows.append(
                [
                    _label(row["criterion"]),
                    str(row["n"]),
                    *[_pm(row["metrics"][m]) for m in metrics],
                    *[_num(row["consensus"][m]) for m in metrics],
                    _num(row["cost_trial_hours"], 3),
                    stops,
                ]
            )
        tables.append(
            TableSpec(
                "Table I: ground truth of the final cells (mean ± std over seeds)",
                ["criterion", "seeds", *metrics, *[f"consensus {m}" for m in metrics], "cost (trial-h)", "stop epochs"],
                rows,
                "consensus = the criterion's consensus cell; cost = trial time of the search (shared by all criteria); "
                "stop epochs = each seed's last epoch, in seed order.",
            )
        )
    if data.get("table_v"):
        rows = [
            [
                _label(r["criterion"]),
                _pm(r),
                f"{_num(r['best']['value'])} (s{r['best']['seed']})" if r["best"] else "-",
                f"{_num(r['worst']['value'])} (s{r['worst']['seed']})" if r["worst"] else "-",
                f"{r['n_consensus']}/{r['n']}",
                str(r["n_distinct"]),
                _num(r["pair_agreement"]),
                "-" if r["same_as_magnitude"] is None else f"{r['same_as_magnitude']}/{r['n']}",
            ]
            for r in data["table_v"]
        ]
        tables.append(
            TableSpec(
                f"Table V: selection ablation on the same supernets ({metric})",
                [
                    "criterion",
                    "mean ± std",
                    "best (seed)",
                    "worst (seed)",
                    "= consensus",
                    "distinct",
                    "pair agreement",
                    "= DARTS cell",
                ],
                rows,
                "= consensus: seeds whose final cell is the criterion's consensus cell; distinct: different final "
                "cells; pair agreement: share of seed pairs with equal cells; = DARTS cell: seeds whose cell equals "
                "the same seed's magnitude cell.",
            )
        )
    elif data.get("structure"):
        rows = [
            [
                _label(r["criterion"]),
                _num(r["agreement"]),
                f"{r['n_consensus']}/{r['n']}",
                str(r["n_distinct"]),
                _num(r["pair_agreement"]),
                "-" if r["same_as_magnitude"] is None else f"{r['same_as_magnitude']}/{r['n']}",
            ]
            for r in data["structure"]
        ]
        tables.append(
            TableSpec(
                "Agreement of the final cells across seeds",
                ["criterion", "agreement", "= consensus", "distinct", "pair agreement", "= DARTS cell"],
                rows,
                "agreement: share of seeds holding the most common final cell.",
            )
        )
    stab = data.get("stability") or []
    if stab and (data.get("has_history") or data.get("table_i")):
        rows = [
            [
                _label(r["criterion"]),
                _num(r["final_std"]),
                _num(r["late_std"]),
                _pm(r["changes"]),
                _pm(r["settled_epoch"], 1),
            ]
            for r in stab
        ]
        tables.append(
            TableSpec(
                f"Table VI: stability ({metric or 'no ground truth'})",
                ["criterion", "final std", "2nd-half std", "genotype changes", "settled at epoch"],
                rows,
                "final std: std over seeds of the final cells' accuracy; 2nd-half std: per seed, std of the per-epoch "
                "cells' accuracy over the last ceil(n/2) epochs, averaged over seeds; changes: epochs whose cell "
                "differs from the previous epoch's; settled: first epoch from which the cell stays final.",
            )
        )
    spear = (data.get("spearman") or {}).get("criteria") or {}
    if spear:
        rows = [
            [
                _label(c),
                _pm(s),
                _num(s["positive_share"]),
                _num(s["best_op_share"]),
                f"{s['n']} (+{s['n_undefined']} undefined)",
            ]
            for c, s in spear.items()
        ]
        tables.append(
            TableSpec(
                "Figure 12: Spearman rho, final-epoch scores vs single-edge neighbourhood ground truth",
                ["criterion", "rho mean ± std", "share rho > 0", "best-op share", "seed-edge pairs"],
                rows,
                "reference cell: each criterion's own final cell; neighbourhood: the 4 non-'none' ops on one edge, "
                "other edges kept.",
            )
        )
    pf = data.get("param_free_final") or {}
    cell_types = sorted({t for v in pf.values() for t in v}, key=lambda t: (t != "normal", t))
    cost = (data.get("eval_cost") or {}).get("criteria") or {}
    if pf:
        size = (data.get("eval_cost") or {}).get("size") or {}
        header = ["criterion", *[f"param-free ({t})" for t in cell_types]]
        if cost:
            header += ["params (M)", "MAdds (M)"]
        rows = []
        for crit in criteria:
            row = [_label(crit), *[_pm(pf.get(crit, {}).get(t)) for t in cell_types]]
            if cost:
                row += [_pm(cost[crit]["params_m"], 3), _pm(cost[crit]["madds_m"], 1)]
            rows.append(row)
        note = "parameter-free ops counted in each final cell (mean ± std over seeds)"
        if cost:
            note += f"; eval network NetworkCIFAR C={size.get('C')}, {size.get('layers')} cells, 32x32, no aux head"
        tables.append(TableSpec("Final cells: parameter-free ops" + (", size" if cost else ""), header, rows, note))
    finals = data.get("finals") or {}
    if finals:
        stops = data.get("stops") or {}
        truth_of = {r["criterion"]: r["metrics"][metric]["values"] for r in data.get("table_i") or []}
        rows = []
        for seed in sorted(finals, key=int):
            row = [seed, str(stops.get(seed, {}).get("last_epoch", "-"))]
            for crit in criteria:
                text = _short(finals[seed].get(crit))
                value = truth_of.get(crit, {}).get(seed)
                row.append(text + (f" ({_num(value)})" if value is not None else ""))
            rows.append(row)
        consensus = data.get("consensus") or {}
        rows.append(["consensus", "", *[_short(consensus.get(c)) for c in criteria]])
        tables.append(TableSpec(f"Final cells per seed ({n} seeds)", ["seed", "epochs", *map(_label, criteria)], rows))
    by_epoch = data.get("by_epoch") or {}
    if by_epoch.get("epochs"):
        acc = by_epoch.get("accuracy") or {}
        pfe = by_epoch.get("param_free") or {}
        types = sorted({t for v in pfe.values() for t in v}, key=lambda t: (t != "normal", t))
        header = ["epoch", *[f"{_label(c)} {metric}" for c in criteria if c in acc]]
        header += [f"{_label(c)} pf {t}" for c in criteria for t in types if c in pfe]
        rows = []
        for j, epoch in enumerate(by_epoch["epochs"]):
            row = [str(epoch)]
            row += [_pm({"mean": acc[c]["mean"][j], "std": acc[c]["std"][j]}) for c in criteria if c in acc]
            row += [
                _pm({"mean": pfe[c][t]["mean"][j], "std": pfe[c][t]["std"][j]}, 1)
                for c in criteria
                for t in types
                if c in pfe
            ]
            rows.append(row)
        tables.append(
            TableSpec(
                "Figures 9/10 data: accuracy and parameter-free ops of the selected cells by epoch (mean ± std)",
                header,
                rows,
            )
        )
    return tables


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(spec: TableSpec) -> str:
    lines = [f"**{spec.title}**", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in spec.header) + " |")
    lines.append("|" + "|".join("---" for _ in spec.header) + "|")
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in spec.rows]
    if spec.note:
        lines += ["", f"_{spec.note}_"]
    return "\n".join(lines)


def render_markdown(evidence: Mapping[str, Any]) -> str:
    """The whole evidence as markdown (what ``evidence.md`` holds and ``--format markdown`` prints)."""
    parts = [f"# Evidence: {evidence['name']}", ""]
    cost = evidence.get("search_cost_trial_hours")
    parts.append(f"- experiment: `{evidence['experiment_path']}`")
    if evidence.get("stop_reason"):
        parts.append(f"- stop: {evidence['stop_reason']}")
    if cost is not None:
        parts.append(f"- search cost (Tune, all trials): {cost:.3f} trial-hours")
    for note in evidence.get("notes") or []:
        parts.append(f"- note: {note}")
    for variant, data in evidence["variants"].items():
        parts += ["", f"## {variant} ({data['space']}, {len(data['seeds'])} seeds)", ""]
        if data.get("truth_source"):
            parts.append(f"- ground truth: `{data['truth_source']}`, primary metric `{data['metric']}`")
        elif data["space"] in NB201_LIKE:
            parts.append("- ground truth: none (no NB201 table)")
        for seed, why in (data.get("excluded") or {}).items():
            parts.append(f"- seed {seed} left out: {why}")
        for spec in variant_tables(data):
            parts += ["", markdown_table(spec)]
    if evidence.get("figures"):
        parts += ["", "## Figures", ""]
        parts += [f"![{Path(f).stem}]({Path(f).name})" for f in evidence["figures"]]
    return "\n".join(parts) + "\n"


def render_rich(evidence: Mapping[str, Any]) -> Any:
    """The same tables as rich renderables."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    for variant, data in evidence["variants"].items():
        head = f"[bold]{variant}[/] ({data['space']}, {len(data['seeds'])} seeds)"
        if data.get("truth_source"):
            head += f"  ground truth: {data['truth_source']} [{data['metric']}]"
        parts.append(Text.from_markup(head))
        for spec in variant_tables(data):
            table = Table(title=spec.title, caption=spec.note or None, show_lines=False)
            for name in spec.header:
                table.add_column(name, overflow="fold")
            for row in spec.rows:
                table.add_row(*row)
            parts.append(table)
    for note in evidence.get("notes") or []:
        parts.append(Text(f"note: {note}"))
    return Group(*parts)


# ============================================================================================ figures


def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


_STYLES = {
    "magnitude": ("tab:blue", "-", "o"),
    "ostr": ("tab:red", "--", "s"),
    "ostr_star": ("tab:green", "-.", "^"),
    "naive": ("tab:purple", ":", "D"),
}


def _series(ax: Any, epochs: list[int], stats: Mapping[str, list[float]], crit: str) -> None:
    """Mean line and ±std band; criteria keep one colour, dash and marker so equal curves stay visible."""
    from matplotlib.ticker import MaxNLocator

    mean = np.array([np.nan if v is None else v for v in stats["mean"]], dtype=np.float64)
    std = np.array([np.nan if v is None else v for v in stats["std"]], dtype=np.float64)
    color, dash, marker = _STYLES.get(crit, (None, "-", "o"))
    (line,) = ax.plot(epochs, mean, linestyle=dash, marker=marker, markersize=4, color=color, label=_label(crit))
    ax.fill_between(epochs, mean - std, mean + std, alpha=0.15, color=line.get_color())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def make_figures(evidence: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes per figure file name; a figure whose data is missing everywhere is not made."""
    from matplotlib.figure import Figure

    figures: dict[str, bytes] = {}
    variants = evidence["variants"]
    with_acc = [(v, d) for v, d in variants.items() if (d.get("by_epoch") or {}).get("accuracy")]
    if with_acc:
        fig = Figure(figsize=(6.5, 3.6 * len(with_acc)), layout="constrained")
        for i, (variant, data) in enumerate(with_acc):
            ax = fig.add_subplot(len(with_acc), 1, i + 1)
            for crit, stats in data["by_epoch"]["accuracy"].items():
                _series(ax, data["by_epoch"]["epochs"], stats, crit)
            ax.set_title(f"{variant}: ground truth of the selected cell")
            ax.set_xlabel("search epoch")
            ax.set_ylabel(data["metric"])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        figures[FIGURE_FILES["accuracy"]] = _figure_bytes(fig)
    panels = [
        (variant, cell_type, data)
        for variant, data in variants.items()
        for cell_type in sorted(
            {t for v in ((data.get("by_epoch") or {}).get("param_free") or {}).values() for t in v},
            key=lambda t: (t != "normal", t),
        )
    ]
    if panels:
        fig = Figure(figsize=(6.5, 3.2 * len(panels)), layout="constrained")
        for i, (variant, cell_type, data) in enumerate(panels):
            ax = fig.add_subplot(len(panels), 1, i + 1)
            for crit, per_type in data["by_epoch"]["param_free"].items():
                if cell_type in per_type:
                    _series(ax, data["by_epoch"]["epochs"], per_type[cell_type], crit)
            free = ", ".join(sorted(parameter_free_set(data["space"])))
            ax.set_title(f"{variant} ({cell_type} cell): parameter-free ops ({free})", fontsize=9)
            ax.set_xlabel("search epoch")
            ax.set_ylabel("count")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        figures[FIGURE_FILES["param_free"]] = _figure_bytes(fig)
    with_rho = [(v, d) for v, d in variants.items() if (d.get("spearman") or {}).get("criteria")]
    if with_rho:
        fig = Figure(figsize=(7.5, 3.6 * len(with_rho)), layout="constrained")
        for i, (variant, data) in enumerate(with_rho):
            ax = fig.add_subplot(len(with_rho), 1, i + 1)
            crits = data["spearman"]["criteria"]
            width = 0.8 / len(crits)
            x = np.arange(len(NB201_EDGES))
            for k, (crit, summary) in enumerate(crits.items()):
                mean = np.array([np.nan if v is None else v for v in summary["per_edge"]["mean"]], dtype=np.float64)
                std = np.array([np.nan if v is None else v for v in summary["per_edge"]["std"]], dtype=np.float64)
                label = f"{_label(crit)} (mean {_num(summary['mean'])})"
                ax.bar(
                    x + (k - (len(crits) - 1) / 2) * width,
                    np.nan_to_num(mean),
                    width,
                    yerr=np.nan_to_num(std),
                    color=_STYLES.get(crit, (None,))[0],
                    label=label,
                    capsize=2,
                )
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xticks(x, [edge_name(e) for e in range(len(NB201_EDGES))])
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{variant}: Spearman(score, single-edge neighbourhood {data['metric']})", fontsize=9)
            ax.set_xlabel("edge (to<-from) of each criterion's own final cell")
            ax.set_ylabel("rho (mean ± std over seeds)")
            ax.legend(fontsize=7)
        figures[FIGURE_FILES["spearman"]] = _figure_bytes(fig)
    return figures


def write_outputs(evidence: dict[str, Any], path: str | None = None, *, report: Mapping | None = None) -> list[str]:
    """Write the figures, ``evidence.md`` and ``evidence.json`` beside report.json; returns the written paths
    and records the figure names in ``evidence['figures']``."""
    path = path or evidence["experiment_path"]
    written = []
    figures = make_figures(evidence)
    evidence["figures"] = list(figures)
    for name, data in figures.items():
        written.append(_write_bytes(path, name, data))
    written.append(_write_bytes(path, MARKDOWN_FILE, render_markdown(evidence).encode()))
    payload = to_json(evidence, **({"report": report} if report is not None else {}))
    written.append(_write_bytes(path, JSON_FILE, json.dumps(payload, indent=1).encode()))
    return written


# ============================================================================================ MLflow (optional)


def mlflow_parent_run(path: str) -> tuple[str, str | None] | None:
    """``(parent run id, tracking URI)`` from the experiment's ``mlflow_runs.json``, or ``None``.

    Accepted shapes: ``{"parent_run_id": ..., "tracking_uri": ...}``, ``{"parent": "<id>"}`` or
    ``{"parent": {"run_id": ..., "tracking_uri": ...}}``, ``{"run_id": ...}``.
    """
    try:
        text = _read_text(path, MLFLOW_RUNS_FILE)
        runs = json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(runs, Mapping):
        return None
    parent = runs.get("parent")
    uri = runs.get("tracking_uri")
    run_id = runs.get("parent_run_id")
    if isinstance(parent, Mapping):
        run_id = run_id or parent.get("run_id")
        uri = uri or parent.get("tracking_uri")
    elif isinstance(parent, str):
        run_id = run_id or parent
    run_id = run_id or runs.get("run_id")
    return (str(run_id), uri) if run_id else None


def log_to_mlflow(path: str, files: Sequence[str], artifact_path: str = "evidence") -> str | None:
    """Log ``files`` on the launch's MLflow parent run when ``mlflow_runs.json`` names one.

    Returns a one-line message, or ``None`` when there is no run mapping (then nothing is attempted). Failures
    are reported in the message, never raised: the evidence is already on disk.
    """
    target = mlflow_parent_run(path)
    if target is None:
        return None
    run_id, uri = target
    local = [f for f in files if "://" not in f and Path(f).is_file()]
    try:
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)  # a SQLite store's migration chatter
        client = MlflowClient(tracking_uri=uri)
        for file in local:
            client.log_artifact(run_id, file, artifact_path=artifact_path)
    except Exception as exc:  # an unreachable server must not fail a report that is already written
        return f"MLflow logging skipped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return f"logged {len(local)} evidence files to MLflow run {run_id}"
