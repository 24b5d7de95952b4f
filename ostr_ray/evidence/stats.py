"""Pure statistics and cell helpers of the evidence report: no files, no ground truth, no rendering.

Which criteria exist, how each is shown and what it ranks by come from the criterion registry
(:mod:`ostr_ray.core.criteria`); which spaces have NAS-Bench-201 cells from the space registry
(``SearchSpace.benchmark``), so a newly registered criterion or space needs no change here. The conventions
these numbers follow (population std, NaN handling, parameter-free ops, single-edge neighbourhoods) are
written out in :mod:`ostr_ray.evidence.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import combinations

import numpy as np
from scipy.stats import rankdata

from ostr_ray.core.criteria import ArchState, CriterionError, baseline_criteria, get_criterion, list_criteria
from ostr_ray.core.events import EpochReport
from searchspaces import get_space
from searchspaces.nb201_genotype import EDGES as NB201_EDGES
from searchspaces.nb201_genotype import OPS as NB201_OPS
from searchspaces.nb201_genotype import NB201Genotype

STD_DDOF = 0
"""Population std over seeds (and over epochs) everywhere."""
NB201_CANDIDATE_OPS = tuple(op for op in NB201_OPS if op != "none")
"""The ops of a single-edge neighbourhood, in NB201's op order: skip_connect, nor_conv_1x1, nor_conv_3x3,
avg_pool_3x3."""


# ============================================================================================ registries


def ordered_criteria(present: Iterable[str]) -> list[str]:
    """The criteria in ``present``: registered ones in registry order, then any no longer registered (an old
    launch's), sorted."""
    present = set(present)
    registered = list_criteria()
    return [c for c in registered if c in present] + sorted(present - set(registered))


def baseline_criterion() -> str | None:
    """The ablation's comparison point (DARTS' magnitude) as the registry marks it; ``None`` when none is."""
    baselines = baseline_criteria()
    return baselines[0] if baselines else None


def has_nb201_cells(space: str) -> bool:
    """Whether ``space``'s cells index the NAS-Bench-201 tables: ground truth, single-edge neighbourhoods."""
    return get_space(space).benchmark == "nb201"


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


def selection_scores(report: EpochReport, criterion: str) -> dict[str, np.ndarray] | None:
    """The matrices ``criterion`` ranks by at ``report``'s epoch: the registered criterion re-applied to the
    report's arrays (magnitude: the betas; ostr, ostr_star, naive: their score matrices); ``None`` when the
    criterion is not registered (any more) or the report lacks what it reads."""
    try:
        scores = get_criterion(criterion)(ArchState.from_report(report)).scores
    except (CriterionError, KeyError):
        return None
    if not scores:
        return None
    return {cell: np.asarray(m, dtype=np.float64) for cell, m in scores.items()}
