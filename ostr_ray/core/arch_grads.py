"""The architecture gradients of one step, first order or DARTS' unrolled second order.

Autograd is asked only for the gradients of alpha, beta = softmax(alpha) and the PC-DARTS edge alphas (never
for the weights, which the architecture step does not update): strength and its variants are read from exactly
these gradients, so they cost no extra forward or backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from searchspaces import Supernet

LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""``loss(x, y, op_weights, params=None) -> (logits, loss)``."""


class ArchGrads(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor
    alpha_grads: dict[str, torch.Tensor]
    betas: dict[str, torch.Tensor]
    beta_grads: dict[str, torch.Tensor]
    extra_grads: list[torch.Tensor]
    """Gradients of the arch parameters after the op alphas (PC-DARTS edge alphas), in their order."""


@dataclass
class ArchGradients:
    """Computes :class:`ArchGrads` for one supernet, its weight optimiser and its loss function."""

    model: Supernet
    loss: LossFn
    w_opt: torch.optim.SGD
    weight_params: list[torch.nn.Parameter]
    arch_params: list[torch.nn.Parameter]
    momentum: float
    weight_decay: float

    def _inputs(self) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        betas = self.model.op_weights()
        return betas, self.arch_params[len(betas) :]  # PC-DARTS edge alphas follow the op alphas

    def first_order(self, x: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> ArchGrads:
        betas, extra = self._inputs()
        alphas = list(self.model.alphas.values())
        logits, loss = self.loss(x, y, betas, params)
        grads = torch.autograd.grad(loss, [*alphas, *betas.values(), *extra])
        cells, n = list(betas), len(betas)
        return ArchGrads(
            logits, loss, dict(zip(cells, grads[:n])), betas, dict(zip(cells, grads[n : 2 * n])), list(grads[2 * n :])
        )

    def second_order(
        self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor
    ) -> ArchGrads:
        """DARTS' unrolled gradient: alpha grad at w' = w - lr * (SGD step), minus lr * a finite-difference
        Hessian-vector product. Strength reads the total alpha gradient; the beta gradient is the one at w'."""
        lr = self.w_opt.param_groups[0]["lr"]
        names = [n for n, p in self.model.named_parameters() if any(p is w for w in self.weight_params)]
        params = dict(self.model.named_parameters())
        unrolled = self._unrolled_weights(lr, [params[n] for n in names], x_train, y_train)
        betas, extra = self._inputs()
        alphas = list(self.model.alphas.values())
        logits, loss = self.loss(x_val, y_val, betas, {**params, **dict(zip(names, unrolled))})
        grads = torch.autograd.grad(loss, [*alphas, *betas.values(), *extra, *unrolled])
        n = len(alphas)
        arch_grads = [*grads[:n], *grads[2 * n : 2 * n + len(extra)]]
        implicit = self._hessian_vector(x_train, y_train, names, params, grads[2 * n + len(extra) :])
        arch_grads = [g - lr * h for g, h in zip(arch_grads, implicit)]
        cells = list(betas)
        return ArchGrads(
            logits, loss, dict(zip(cells, arch_grads[:n])), betas, dict(zip(cells, grads[n : 2 * n])), arch_grads[n:]
        )

    def _unrolled_weights(
        self, lr: float, weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> list[torch.Tensor]:
        """w' = w - lr * (grad + decay * w + momentum * buffer): the SGD step the weights would take."""
        with torch.no_grad():
            op_weights = self.model.op_weights()
        _, train_loss = self.loss(x, y, op_weights)
        dw = torch.autograd.grad(train_loss, weights)
        unrolled = []
        with torch.no_grad():
            for w, g in zip(weights, dw):
                buf = self.w_opt.state.get(w, {}).get("momentum_buffer")
                step = g + self.weight_decay * w + (self.momentum * buf if buf is not None else 0)
                unrolled.append((w - lr * step).requires_grad_())
        return unrolled

    def _hessian_vector(self, x, y, names, params, vector) -> list[torch.Tensor]:
        """(d/d arch) of L_train at w +- eps * v, central difference (DARTS eq. 8), eps = 0.01 / |v|."""
        eps = 0.01 / torch.sqrt(sum(v.pow(2).sum() for v in vector)).clamp_min(1e-12)
        grads = []
        for sign in (1.0, -1.0):
            shifted = {**params, **{n: params[n].detach() + sign * eps * v for n, v in zip(names, vector)}}
            _, loss = self.loss(x, y, self.model.op_weights(), shifted)
            grads.append(torch.autograd.grad(loss, self.arch_params))
        return [(gp - gm) / (2 * eps) for gp, gm in zip(*grads)]
