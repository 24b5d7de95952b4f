"""Selection criteria: a registry of small named functions from the supernet's state to what it ranks by.

Each criterion returns a :class:`Selection` (the score tensors, their standard errors where they have any,
and edge-normalisation weights where it opts into them); :func:`select` decodes that through the space's
own decoder. One supernet therefore yields every criterion's genotype each epoch -- the paper's ablation
for free -- and a new criterion is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ostr_ray.core.events import EpochReport, Matrix
from searchspaces import Genotype, SearchSpace

CellScores = Mapping[str, torch.Tensor]


@dataclass
class ArchState:
    """What criteria read: alphas, betas, epoch-mean scores and standard errors, edge weights (PC-DARTS)."""

    alphas: dict[str, torch.Tensor]
    betas: dict[str, torch.Tensor]
    mean: dict[str, dict[str, torch.Tensor]]
    stderr: dict[str, dict[str, torch.Tensor]]
    edge_weights: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: EpochReport) -> ArchState:
        """The state a criterion saw when ``report`` was made, rebuilt from the report's arrays: what the
        coordinator and the evidence use to re-apply any criterion to a finished epoch."""
        return cls(
            alphas=_tensors(report.alphas),
            betas=_tensors(report.betas),
            mean={name: _tensors(cells) for name, cells in report.scores.items()},
            stderr={name: _tensors(cells) for name, cells in report.stderr.items()},
            edge_weights=_tensors(report.edge_weights or {}),
        )


def _tensors(matrix: Matrix) -> dict[str, torch.Tensor]:
    return {cell: torch.from_numpy(np.array(value, dtype=np.float64)) for cell, value in matrix.items()}


@dataclass
class Selection:
    scores: CellScores
    stderr: CellScores | None = None
    edge_weights: CellScores | None = None


Criterion = Callable[[ArchState], Selection]


@dataclass(frozen=True)
class CriterionInfo:
    """A registered criterion and what the edges (console, reports, MLflow) need to show it."""

    name: str
    fn: Criterion
    label: str
    """Name in tables and reports (``"OStr*"``)."""
    description: str
    """One line: what it ranks by (the function's docstring's first line)."""
    baseline: bool = False
    """The comparison point of the ablation (DARTS' argmax alpha): shown beside the watched criterion."""


_CRITERIA: dict[str, CriterionInfo] = {}
DEFAULT_CRITERION = "ostr"
"""The criterion a search, a launch and a retrain's genotype lookup watch unless told otherwise (the paper's)."""


class CriterionError(ValueError):
    pass


def register_criterion(
    name: str, *, label: str | None = None, baseline: bool = False
) -> Callable[[Criterion], Criterion]:
    def wrap(fn: Criterion) -> Criterion:
        if name in _CRITERIA:
            raise CriterionError(f"criterion {name!r} registered twice")
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _CRITERIA[name] = CriterionInfo(name, fn, label or name, description, baseline)
        return fn

    return wrap


def unregister_criterion(name: str) -> None:
    """Remove a criterion (tests and notebooks that register temporary ones)."""
    _CRITERIA.pop(name, None)


def list_criteria() -> list[str]:
    return list(_CRITERIA)


def criterion_info(name: str) -> CriterionInfo:
    try:
        return _CRITERIA[name]
    except KeyError:
        raise CriterionError(f"unknown criterion {name!r}; choose from {', '.join(_CRITERIA)}") from None


def criterion_label(name: str) -> str:
    """The display name of ``name``, or ``name`` itself for one no longer registered (an old report)."""
    info = _CRITERIA.get(name)
    return info.label if info else name


def baseline_criteria() -> list[str]:
    return [name for name, info in _CRITERIA.items() if info.baseline]


def get_criterion(name: str) -> Criterion:
    return criterion_info(name).fn


def select(name: str, space: SearchSpace, state: ArchState) -> tuple[Genotype, Selection]:
    """The genotype criterion ``name`` picks, and the selection it was decoded from."""
    selection = get_criterion(name)(state)
    return space.decode(selection.scores, edge_weights=selection.edge_weights), selection


@register_criterion("magnitude", label="DARTS (magnitude)", baseline=True)
def magnitude(state: ArchState) -> Selection:
    """DARTS: the largest architecture weight beta = softmax(alpha) (times PC-DARTS edge weights)."""
    return Selection(scores=state.betas, edge_weights=state.edge_weights or None)


@register_criterion(DEFAULT_CRITERION, label="OStr")
def ostr(state: ArchState) -> Selection:
    """OStr-DARTS: operation strength, mean_b |dL_val/d alpha_o|_b."""
    return Selection(scores=state.mean["ostr"], stderr=state.stderr["ostr"])


@register_criterion("ostr_star", label="OStr*")
def ostr_star(state: ArchState) -> Selection:
    """OStr*: strength per unit of architecture weight, mean_b (|dL/d alpha_o|_b / beta_o)."""
    return Selection(scores=state.mean["ostr_star"], stderr=state.stderr["ostr_star"])


@register_criterion("naive", label="naive")
def naive(state: ArchState) -> Selection:
    """Naive pruning: first-order loss change when op o is removed, mean_b |beta_o dL/d beta_o|_b."""
    return Selection(scores=state.mean["naive"], stderr=state.stderr["naive"])
