"""Selection criteria: a registry of small named functions from the supernet's state to what it ranks by.

Each criterion returns a :class:`Selection` (the score tensors, their standard errors where they have any,
and edge-normalisation weights where it opts into them); :func:`select` decodes that through the space's
own decoder. One supernet therefore yields every criterion's genotype each epoch -- the paper's ablation
for free -- and a new criterion is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

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


@dataclass
class Selection:
    scores: CellScores
    stderr: CellScores | None = None
    edge_weights: CellScores | None = None


Criterion = Callable[[ArchState], Selection]
_CRITERIA: dict[str, Criterion] = {}


class CriterionError(ValueError):
    pass


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    def wrap(fn: Criterion) -> Criterion:
        if name in _CRITERIA:
            raise CriterionError(f"criterion {name!r} registered twice")
        _CRITERIA[name] = fn
        return fn

    return wrap


def list_criteria() -> list[str]:
    return list(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    try:
        return _CRITERIA[name]
    except KeyError:
        raise CriterionError(f"unknown criterion {name!r}; choose from {', '.join(_CRITERIA)}") from None


def select(name: str, space: SearchSpace, state: ArchState) -> tuple[Genotype, Selection]:
    """The genotype criterion ``name`` picks, and the selection it was decoded from."""
    selection = get_criterion(name)(state)
    return space.decode(selection.scores, edge_weights=selection.edge_weights), selection


@register_criterion("magnitude")
def magnitude(state: ArchState) -> Selection:
    """DARTS: the largest architecture weight beta = softmax(alpha) (times PC-DARTS edge weights)."""
    return Selection(scores=state.betas, edge_weights=state.edge_weights or None)


@register_criterion("ostr")
def ostr(state: ArchState) -> Selection:
    """OStr-DARTS: operation strength, mean_b |dL_val/d alpha_o|_b."""
    return Selection(scores=state.mean["ostr"], stderr=state.stderr["ostr"])


@register_criterion("ostr_star")
def ostr_star(state: ArchState) -> Selection:
    """OStr*: strength per unit of architecture weight, mean_b (|dL/d alpha_o|_b / beta_o)."""
    return Selection(scores=state.mean["ostr_star"], stderr=state.stderr["ostr_star"])


@register_criterion("naive")
def naive(state: ArchState) -> Selection:
    """Naive pruning: first-order loss change when op o is removed, mean_b |beta_o dL/d beta_o|_b."""
    return Selection(scores=state.mean["naive"], stderr=state.stderr["naive"])
