"""K seeds' search state as stacked tensors and back: weights, optimiser states, strength sums, clipping.

A seed group (:mod:`.batched`) keeps each seed's state in that seed's own :class:`~.search.Searcher` (its
model, optimisers and accumulator, in the checkpoint format of a seed run alone) and runs the steps on
stacked copies whose leading dimension is the seed. These pure functions move state between the two forms.
Everything stacked is updated elementwise by the step (SGD, Adam, sums of scores), so a seed's slice of a
stacked update is that seed's own update; the one per-seed reduction, gradient clipping, is done per slice.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

Tensors = Mapping[str, torch.Tensor]


@torch.no_grad()
def write_back(model: nn.Module, stacked: Tensors, index: int) -> None:
    """Copy seed ``index``'s slice of each stacked parameter / buffer into ``model``'s own tensor of that name
    (in place, so the model's optimisers keep pointing at its parameters)."""
    own = model.state_dict(keep_vars=True)
    for name, tensor in stacked.items():
        own[name].copy_(tensor[index])


def stack_optimizer_states(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``Optimizer.state_dict()`` for the stacked parameters, from the seeds' own (same optimiser class,
    parameters in the same order). Per-parameter entries (momentum buffers, Adam moments) are stacked along
    a new leading seed dimension; 0-dim entries (Adam's ``step``) and the param groups (lr, betas, ...) are
    the same for every seed of a group, which is checked, and kept once."""
    first = states[0]
    for other in states[1:]:
        if other["param_groups"] != first["param_groups"] or other["state"].keys() != first["state"].keys():
            raise ValueError("the seeds of a group must share their optimiser settings and schedule position")
    stacked: dict[int, dict[str, Any]] = {}
    for index, entry in first["state"].items():
        stacked[index] = {}
        for key, value in entry.items():
            values = [state["state"][index][key] for state in states]
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                stacked[index][key] = torch.stack(values)
            elif all(_equal(v, value) for v in values):
                stacked[index][key] = _clone(value)
            else:
                raise ValueError(f"optimiser state {key!r} differs between the seeds of a group")
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def optimizer_state_of(stacked: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Seed ``index``'s ``Optimizer.state_dict()`` out of a stacked one (inverse of
    :func:`stack_optimizer_states`). Slices are cloned: saving a view would save the whole stacked storage."""
    return {
        "state": {
            param: {key: _slice(value, index) for key, value in entry.items()}
            for param, entry in stacked["state"].items()
        },
        "param_groups": copy.deepcopy(stacked["param_groups"]),
    }


def accumulator_state_of(stacked: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Seed ``index``'s ``StrengthAccumulator.state_dict()`` out of an accumulator fed stacked ``(K, E, O)``
    readings, whose sums are ``(3, K, E, O)``: score axis first (as :func:`~.strength.minibatch_scores`
    stacks them), seed axis second."""
    return {
        "sum": {cell: total[:, index].clone() for cell, total in stacked["sum"].items()},
        "sumsq": {cell: total[:, index].clone() for cell, total in stacked["sumsq"].items()},
        "count": stacked["count"],
    }


@torch.no_grad()
def clip_grad_norm_per_seed_(tensors: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (L2) for each seed's slice of stacked parameters on its own.

    Per seed: the total norm over all its gradients, ``coef = clamp(max_norm / (norm + 1e-6), max=1)``, every
    gradient multiplied by ``coef`` (as torch does, also when it is 1). torch's function would take one norm
    over all seeds together, coupling them. Returns the ``(K,)`` total norms (before clipping).
    """
    grads = [t.grad for t in tensors if t.grad is not None]
    per_param = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (P, K)
    total = torch.linalg.vector_norm(per_param, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(coef.view(-1, *[1] * (grad.dim() - 1)))
    return total


def _slice(value: Any, index: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value[index].clone()
    return _clone(value)


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return bool(torch.equal(a, b))
    return a == b
