"""The evidence's measures of one seed and one edge: per-epoch values of the selected cells, a seed's
stability, the single-edge Spearman correlations (Figure 12) and an evaluation network's size.

What each measure means is written out in :mod:`ostr_ray.evidence.analysis`, which aggregates them per variant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ostr_ray.evidence.loading import GroundTruth, SeedRun
from ostr_ray.evidence.stats import (
    NB201_CANDIDATE_OPS,
    STD_DDOF,
    edge_name,
    mean_std,
    single_edge_neighbourhood,
    spearman,
)
from searchspaces import get_space
from searchspaces.nb201_genotype import EDGES as NB201_EDGES
from searchspaces.nb201_genotype import OPS as NB201_OPS
from searchspaces.nb201_genotype import NB201Genotype


def epoch_matrix(
    runs: Sequence[SeedRun], criterion: str, value: Callable[[str], float]
) -> tuple[list[int], np.ndarray]:
    """Epochs ``1..E`` and a (seeds, E) array of ``value(cell_at(epoch))`` (NaN where a seed has no cell)."""
    last = max((int(r.epoch) for run in runs for r in run.reports), default=0)
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


def column_stats(matrix: np.ndarray) -> dict[str, list[float]]:
    """Per column of ``matrix`` (one per epoch): mean, std and count of its finite values."""
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
    DARTS-style evaluation network of ``cell``, counted as everywhere else (:mod:`ostr_ray.core.cost`)."""
    from ostr_ray.core.cost import measure_network

    sp = get_space(space)
    network = sp.build_eval_network(sp.parse_genotype(cell), C=C, layers=layers, auxiliary=False)
    size = measure_network(network, image_size)
    return {"params_m": size["params_m"], "madds_m": size["mult_adds_m"]}
