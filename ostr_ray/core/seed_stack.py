"""K seeds' supernets of one space as one batched model: the search step of a seed group.

The seeds' weights, buffers and alphas are stacked along a leading seed dimension
(``torch.func.stack_module_state``) and the forward is ``torch.func.functional_call`` of one parameter-less
template under ``torch.vmap`` over (weights, buffers, mixing weights, images, labels): each seed sees only its
own slice and its own batch, and vmap turns each convolution into one grouped convolution for all K seeds, so
one kernel serves K seeds. The maths per seed is :class:`~.search.Searcher`'s: the architecture step (first
order or single level) reads strength from its own gradients, then the weight step; the losses of the seeds
are summed before backward, and as no seed's loss depends on another's parameters, each seed's gradient is
its own. Clipping is per seed (:func:`~.stacking.clip_grad_norm_per_seed_`); SGD and Adam are elementwise, so
one optimiser over the stacked tensors updates each seed exactly as its own would (same lr, schedule and step
count: a group only ever holds seeds at the same epoch).

BatchNorm running statistics stay per seed: the running-stat buffers are stacked like the weights and passed
through functional_call, so inside vmap ``F.batch_norm`` sees a batched ``running_mean`` next to its batched
input and its in-place update writes each seed's own slice of the stacked buffer (vmap refuses in-place
updates only when an unbatched tensor would receive batched values, i.e. with shared buffers). They never
feed the search (it runs in training mode, on batch statistics) but are part of each seed's checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from ostr_ray.core.compiled import compile_mode, maybe_compiled
from ostr_ray.core.schedule import make_optimizers
from ostr_ray.core.search import Searcher, batch_totals
from ostr_ray.core.stacking import (
    accumulator_state_of,
    clip_grad_norm_per_seed_,
    optimizer_state_of,
    stack_optimizer_states,
    write_back,
)
from ostr_ray.core.strength import StrengthAccumulator

Batch = tuple[torch.Tensor, torch.Tensor]
"""Stacked images ``(K, B, C, H, W)`` and labels ``(K, B)``."""


class SeedStack:
    """The stacked state and batched steps of the seeds ``members`` (all at the same epoch, same config but
    the seed). Built from the members' own state; :meth:`write_back` returns it to them."""

    def __init__(self, members: Sequence[Searcher]) -> None:
        first = members[0]
        self.config, self.device = first.config, first.device
        self.autocast_dtype = first.autocast_dtype
        # The template only lends its structure to functional_call; on "meta" it holds no memory.
        self.template = copy.deepcopy(first.model).to("meta")
        params, self.buffers = stack_module_state([m.model for m in members])
        names = {id(p): name for name, p in first.model.named_parameters()}
        self.params = params
        self.weights = [params[names[id(p)]] for p in first.weight_params]
        self.arch = [params[names[id(p)]] for p in first.arch_params]
        self.cells = list(first.model.alphas)
        self.alphas = [params[f"alphas.{cell}"] for cell in self.cells]
        self.extra = self.arch[len(self.alphas) :]  # PC-DARTS edge alphas, after the op alphas as in arch_parameters
        self.w_opt, self.scheduler, self.a_opt = make_optimizers(self.config, self.weights, self.arch)
        self.w_opt.load_state_dict(stack_optimizer_states([m.w_opt.state_dict() for m in members]))
        self.a_opt.load_state_dict(stack_optimizer_states([m.a_opt.state_dict() for m in members]))
        schedules = [m.scheduler.state_dict() for m in members]
        if any(s != schedules[0] for s in schedules[1:]):
            raise ValueError("the seeds of a group must be at the same point of their schedule")
        self.scheduler.load_state_dict(schedules[0])
        self.accumulator = StrengthAccumulator()
        self.eager_loss = torch.vmap(self._seed_loss)
        self.loss = maybe_compiled(self.eager_loss, compile_mode(self.config, self.device))

    # ------------------------------------------------------------------ the forward
    def _seed_loss(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        op_weights: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One seed's logits and loss (vmapped over the seeds): the maths of ``Searcher._loss``."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            logits = functional_call(self.template, (params, buffers), (x,), {"op_weights": op_weights})
        logits = logits.float()
        return logits, F.cross_entropy(logits, y)

    def op_weights(self) -> dict[str, torch.Tensor]:
        """beta = softmax(alpha) per cell type, ``(K, E, O)``: ``Supernet.op_weights`` per seed."""
        return {cell: torch.softmax(alpha, dim=-1) for cell, alpha in zip(self.cells, self.alphas)}

    # ------------------------------------------------------------------ the step
    def train_step(self, train: Batch, val: Batch, *, arch_active: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One search step for every seed: ``(K, 6)`` totals (loss sum, correct, count; train then val) and
        ``(K,)`` finite flags, device tensors only (``Searcher.train_step`` per seed)."""
        (x_train, y_train), (x_val, y_val) = train, val
        if arch_active:
            val_logits, val_loss = self._arch_step(x_train, y_train, x_val, y_val)
        else:
            with torch.no_grad():
                val_logits, val_loss = self.loss(self.params, self.buffers, self.op_weights(), x_val, y_val)
        train_logits, train_loss, grad_norm = self._weight_step(x_train, y_train)
        per_seed_totals = torch.vmap(batch_totals)  # the same three numbers per seed as a seed alone reports
        totals = per_seed_totals(train_logits, y_train, train_loss) + per_seed_totals(val_logits, y_val, val_loss)
        return torch.stack(totals, dim=1), torch.isfinite(train_loss + val_loss + grad_norm)

    def _arch_step(
        self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Searcher._arch_step`` (first order: on the val batch; single level: on the train batch, the val
        batch only evaluated) for every seed; strength is accumulated before the per-seed clipping."""
        single = self.config.order == "single"
        betas = self.op_weights()
        x, y = (x_train, y_train) if single else (x_val, y_val)
        logits, loss = self.loss(self.params, self.buffers, betas, x, y)
        grads = torch.autograd.grad(loss.sum(), [*self.alphas, *betas.values(), *self.extra])
        n = len(self.alphas)
        alpha_grads, beta_grads = dict(zip(self.cells, grads[:n])), dict(zip(self.cells, grads[n : 2 * n]))
        if single:
            with torch.no_grad():
                logits, loss = self.loss(self.params, self.buffers, self.op_weights(), x_val, y_val)
        for param, grad in zip(self.arch, [*grads[:n], *grads[2 * n :]]):
            param.grad = grad
        self.accumulator.add(alpha_grads, betas, beta_grads)
        if self.config.a_grad_clip > 0:
            clip_grad_norm_per_seed_(self.arch, self.config.a_grad_clip)
        self.a_opt.step()
        return logits.detach(), loss.detach()

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.w_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            betas = self.op_weights()
        logits, loss = self.loss(self.params, self.buffers, betas, x, y)
        loss.sum().backward(inputs=self.weights)
        grad_norm = clip_grad_norm_per_seed_(self.weights, self.config.grad_clip)
        self.w_opt.step()
        return logits.detach(), loss.detach(), grad_norm

    # ------------------------------------------------------------------ back to the seeds
    def write_back(self, members: Sequence[Searcher]) -> None:
        """Put each seed's slice of the stacked state into its own Searcher: weights, buffers, both optimiser
        states, the schedule and the strength sums, so its report and checkpoint are made by its own code."""
        tensors = {**self.params, **self.buffers}
        w_state, a_state = self.w_opt.state_dict(), self.a_opt.state_dict()
        schedule, sums = self.scheduler.state_dict(), self.accumulator.state_dict()
        for index, member in enumerate(members):
            write_back(member.model, tensors, index)
            member.w_opt.load_state_dict(optimizer_state_of(w_state, index))
            member.a_opt.load_state_dict(optimizer_state_of(a_state, index))
            member.scheduler.load_state_dict(schedule)
            member.accumulator.load_state_dict(accumulator_state_of(sums, index))


def stack_batches(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    """The seeds' own batches as one ``(K, B, ...)`` batch."""
    images, labels = zip(*batches)
    return torch.stack(images), torch.stack(labels)
