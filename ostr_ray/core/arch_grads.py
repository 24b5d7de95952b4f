"""The architecture gradients of one step for K >= 1 seeds, first order or DARTS' unrolled second order.

Autograd is asked only for the gradients of alpha, beta = softmax(alpha) and the PC-DARTS edge alphas (never
for the weights, which the architecture step does not update): strength and its variants are read from exactly
these gradients, so they cost no extra forward or backward.

Every tensor here carries the seeds along its leading dimension (:class:`~.step.SearchStep`), and the loss is
one value per seed. Gradients are taken of the sum of the seeds' losses: no seed's loss depends on another
seed's slice, so each slice of a gradient is that seed's own. The one per-seed reduction, the norm that sets
the finite-difference step of the Hessian-vector product, is taken per seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from ostr_ray.core.stacking import seed_norms

LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""``loss(x, y, op_weights, params=None) -> (logits (K, B, classes), loss (K,))``."""


class ArchGrads(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor
    alpha_grads: dict[str, torch.Tensor]
    betas: dict[str, torch.Tensor]
    beta_grads: dict[str, torch.Tensor]
    extra_grads: list[torch.Tensor]
    """Gradients of the arch parameters after the op alphas (PC-DARTS edge alphas), in their order."""


class StackedSupernet(Protocol):
    """What the gradients need of the seeds' stacked supernets (:class:`~.step.SearchStep` is one)."""

    params: dict[str, torch.Tensor]
    weight_names: list[str]
    alphas: list[torch.Tensor]
    extra: list[torch.Tensor]
    arch: list[torch.Tensor]
    w_opt: torch.optim.SGD

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, op_weights: dict[str, torch.Tensor], params=None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def op_weights(self) -> dict[str, torch.Tensor]: ...


def first_order(
    net: StackedSupernet, x: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor] | None = None
) -> ArchGrads:
    """dL/d alpha (and beta, edge alphas) at the current weights, on ``(x, y)``."""
    betas = net.op_weights()
    logits, loss = net.loss(x, y, betas, params)
    grads = torch.autograd.grad(loss.sum(), [*net.alphas, *betas.values(), *net.extra])
    cells, n = list(betas), len(betas)
    return ArchGrads(
        logits, loss, dict(zip(cells, grads[:n])), betas, dict(zip(cells, grads[n : 2 * n])), list(grads[2 * n :])
    )


def second_order(
    net: StackedSupernet,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    momentum: float,
    weight_decay: float,
) -> ArchGrads:
    """DARTS' unrolled gradient: alpha grad at w' = w - lr * (SGD step), minus lr * a finite-difference
    Hessian-vector product. Strength reads the total alpha gradient; the beta gradient is the one at w'."""
    lr = net.w_opt.param_groups[0]["lr"]
    weights = [net.params[name] for name in net.weight_names]
    unrolled = _unrolled_weights(net, lr, weights, x_train, y_train, momentum, weight_decay)
    betas = net.op_weights()
    logits, loss = net.loss(x_val, y_val, betas, {**net.params, **dict(zip(net.weight_names, unrolled))})
    grads = torch.autograd.grad(loss.sum(), [*net.alphas, *betas.values(), *net.extra, *unrolled])
    n, n_extra = len(net.alphas), len(net.extra)
    arch_grads = [*grads[:n], *grads[2 * n : 2 * n + n_extra]]
    implicit = _hessian_vector(net, x_train, y_train, grads[2 * n + n_extra :])
    arch_grads = [g - lr * h for g, h in zip(arch_grads, implicit)]
    cells = list(betas)
    return ArchGrads(
        logits, loss, dict(zip(cells, arch_grads[:n])), betas, dict(zip(cells, grads[n : 2 * n])), arch_grads[n:]
    )


def _unrolled_weights(
    net: StackedSupernet,
    lr: float,
    weights: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    momentum: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    """w' = w - lr * (grad + decay * w + momentum * buffer): the SGD step the weights would take."""
    with torch.no_grad():
        op_weights = net.op_weights()
    _, train_loss = net.loss(x, y, op_weights)
    dw = torch.autograd.grad(train_loss.sum(), weights)
    unrolled = []
    with torch.no_grad():
        for w, g in zip(weights, dw):
            buf = net.w_opt.state.get(w, {}).get("momentum_buffer")
            step = g + weight_decay * w + (momentum * buf if buf is not None else 0)
            unrolled.append((w - lr * step).requires_grad_())
    return unrolled


def _hessian_vector(
    net: StackedSupernet, x: torch.Tensor, y: torch.Tensor, vector: tuple[torch.Tensor, ...]
) -> list[torch.Tensor]:
    """(d/d arch) of L_train at w +- eps * v, central difference (DARTS eq. 8), eps = 0.01 / |v| per seed."""
    eps = 0.01 / seed_norms(vector).clamp_min(1e-12)  # (K,)

    def per_seed(t: torch.Tensor) -> torch.Tensor:
        return eps.view(-1, *[1] * (t.dim() - 1))

    grads = []
    for sign in (1.0, -1.0):
        shifted = {n: net.params[n].detach() + sign * per_seed(v) * v for n, v in zip(net.weight_names, vector)}
        _, loss = net.loss(x, y, net.op_weights(), {**net.params, **shifted})
        grads.append(torch.autograd.grad(loss.sum(), net.arch))
    return [(gp - gm) / (2 * per_seed(gp)) for gp, gm in zip(*grads)]
