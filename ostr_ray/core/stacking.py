"""K seeds' search state as stacked tensors and back: weights, optimiser states, strength sums, clipping.

Every search (:mod:`.search`: one seed or a group of K) keeps each seed's state in that seed's own
:class:`~.seed.SeedSearch` (its model, optimisers and accumulator, in one checkpoint format) and runs the
steps (:class:`~.step.SearchStep`) on stacked tensors whose leading dimension is the seed: copies for K > 1,
views of the seed's own tensors for K = 1. These pure functions move state between the two forms.
Everything stacked is updated elementwise by the step (SGD, Adam, sums of scores), so a seed's slice of a
stacked update is that seed's own update; the one per-seed reduction, gradient clipping, is done per slice.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import stack_module_state

Tensors = Mapping[str, torch.Tensor]


def stack_modules(models: Sequence[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The parameters and buffers of ``models`` stacked along a new leading seed dimension, as
    ``torch.func.stack_module_state`` makes them: new leaf tensors for K > 1. For one model they are views
    ``(1, ...)`` of its own tensors (same storage and strides), so a seed alone pays no copy and its model is
    the stepped state at every moment."""
    if len(models) > 1:
        return stack_module_state(list(models))
    (model,) = models
    params = {n: p.detach().unsqueeze(0).requires_grad_(p.requires_grad) for n, p in model.named_parameters()}
    return params, {n: b.unsqueeze(0) for n, b in model.named_buffers()}


@torch.no_grad()
def write_back(model: nn.Module, stacked: Tensors, index: int) -> None:
    """Copy seed ``index``'s slice of each stacked parameter / buffer into ``model``'s own tensor of that name
    (in place, so the model's optimisers keep pointing at its parameters)."""
    own = model.state_dict(keep_vars=True)
    for name, tensor in stacked.items():
        if own[name].data_ptr() != tensor.data_ptr():  # a seed alone steps its own tensors (stack_modules)
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
    total = seed_norms(grads)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(coef.view(-1, *[1] * (grad.dim() - 1)))
    return total


def seed_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each seed's slice over all ``tensors`` together: ``(K,)``."""
    per_tensor = torch.stack([torch.linalg.vector_norm(t.flatten(1), dim=1) for t in tensors])  # (P, K)
    return torch.linalg.vector_norm(per_tensor, dim=0)


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
