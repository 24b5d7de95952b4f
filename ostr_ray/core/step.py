"""The search step, for K >= 1 seeds of one search at once: the hot path.

Per step (DARTS order): one architecture step on the validation batch (first order, DARTS' unrolled second
order, or single level on the train batch), reading strength from its own gradients (:mod:`.arch_grads`),
then one weight step on the train batch. There is one implementation whatever K is.

The seeds' weights, buffers and alphas are stacked along a leading seed dimension (:func:`~.stacking.stack_modules`)
and the forward is ``torch.func.functional_call`` of one parameter-less template. For K > 1 it runs under
``torch.vmap`` over (weights, buffers, mixing weights, images, labels): each seed sees only its own slice and
its own batch, and vmap turns each convolution into one grouped convolution for all K seeds, so one kernel
serves K seeds. For K = 1 the stacked tensors are views of the seed's own and the forward calls the template
on the slice directly (vmap of one would only add its bookkeeping). The losses of the seeds are summed before
backward; as no seed's loss depends on another's parameters, each seed's gradient is its own. Clipping is per
seed (:func:`~.stacking.clip_grad_norm_per_seed_`); SGD and Adam are elementwise, so one optimiser over the
stacked tensors updates each seed exactly as its own would (same lr, schedule and step count: a step only
ever holds seeds at the same epoch).

BatchNorm running statistics stay per seed: the running-stat buffers are stacked like the weights and passed
through functional_call, so inside vmap ``F.batch_norm`` sees a batched ``running_mean`` next to its batched
input and its in-place update writes each seed's own slice of the stacked buffer. They never feed the search
(it runs in training mode, on batch statistics) but are part of each seed's checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ostr_ray.core.arch_grads import ArchGrads, first_order, second_order
from ostr_ray.core.compiled import compile_mode, maybe_compiled
from ostr_ray.core.schedule import make_optimizers
from ostr_ray.core.seed import SeedSearch, batch_totals
from ostr_ray.core.stacking import (
    accumulator_state_of,
    clip_grad_norm_per_seed_,
    optimizer_state_of,
    stack_modules,
    stack_optimizer_states,
    write_back,
)
from ostr_ray.core.strength import StrengthAccumulator

Batch = tuple[torch.Tensor, torch.Tensor]
"""Stacked images ``(K, B, C, H, W)`` and labels ``(K, B)``."""
Tensors = dict[str, torch.Tensor]


class SearchStep:
    """The stacked state and the step of the seeds ``members`` (all at the same epoch, same config but the
    seed). Built from the members' own state; :meth:`write_back` returns it to them."""

    def __init__(self, members: Sequence[SeedSearch]) -> None:
        first = members[0]
        self.seeds = len(members)
        self.config, self.device = first.config, first.device
        self.autocast_dtype = first.autocast_dtype
        # The template only lends its structure to functional_call; on "meta" it holds no memory.
        self.template = copy.deepcopy(first.model).to("meta")
        self.params, self.buffers = stack_modules([m.model for m in members])
        names = {id(p): name for name, p in first.model.named_parameters()}
        self.weight_names = [names[id(p)] for p in first.weight_params]
        self.weights = [self.params[name] for name in self.weight_names]
        self.arch = [self.params[names[id(p)]] for p in first.arch_params]
        self.cells = list(first.model.alphas)
        self.alphas = [self.params[f"alphas.{cell}"] for cell in self.cells]
        self.extra = self.arch[len(self.alphas) :]  # PC-DARTS edge alphas, after the op alphas as in arch_parameters
        self.w_opt, self.scheduler, self.a_opt = make_optimizers(self.config, self.weights, self.arch)
        self.w_opt.load_state_dict(stack_optimizer_states([m.w_opt.state_dict() for m in members]))
        self.a_opt.load_state_dict(stack_optimizer_states([m.a_opt.state_dict() for m in members]))
        schedules = [m.scheduler.state_dict() for m in members]
        if any(s != schedules[0] for s in schedules[1:]):
            raise ValueError("the seeds of a group must be at the same point of their schedule")
        self.scheduler.load_state_dict(schedules[0])
        self.accumulator = StrengthAccumulator()
        self._per_seed_totals = self.per_seed(batch_totals)
        self.eager_loss = self.per_seed(self._seed_loss)
        self._loss = maybe_compiled(self.eager_loss, compile_mode(self.config, self.device))

    def per_seed(self, fn: Callable) -> Callable:
        """``fn`` of one seed's tensors applied to the stacked ones: vmapped for K > 1, on the slice for K = 1."""
        if self.seeds > 1:
            return torch.vmap(fn)

        def on_the_slice(*args):
            outputs = fn(*(_squeezed(a) for a in args))
            return type(outputs)(o.unsqueeze(0) for o in outputs)

        return on_the_slice

    # ------------------------------------------------------------------ the forward
    def _seed_loss(self, params: Tensors, buffers: Tensors, op_weights: Tensors, x: torch.Tensor, y: torch.Tensor):
        """One seed's logits and loss."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            logits = functional_call(self.template, (params, buffers), (x,), {"op_weights": op_weights})
        logits = logits.float()
        return logits, F.cross_entropy(logits, y)

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, op_weights: Tensors, params: Tensors | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every seed's logits ``(K, B, classes)`` and loss ``(K,)``; ``params`` overrides the stacked ones."""
        return self._loss(self.params if params is None else params, self.buffers, op_weights, x, y)

    def op_weights(self) -> Tensors:
        """beta = softmax(alpha) per cell type, ``(K, E, O)``: ``Supernet.op_weights`` per seed."""
        return {cell: torch.softmax(alpha, dim=-1) for cell, alpha in zip(self.cells, self.alphas)}

    # ------------------------------------------------------------------ the step
    def train_step(self, train: Batch, val: Batch, *, arch_active: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One search step for every seed: ``(K, 6)`` totals (loss sum, correct, count; train then val) and
        ``(K,)`` finite flags, device tensors only, so the loop never waits for the device inside an epoch."""
        (x_train, y_train), (x_val, y_val) = train, val
        if arch_active:
            val_logits, val_loss = self.arch_step(x_train, y_train, x_val, y_val)
        else:
            with torch.no_grad():
                val_logits, val_loss = self.loss(x_val, y_val, self.op_weights())
        train_logits, train_loss, grad_norm = self.weight_step(x_train, y_train)
        totals = self._per_seed_totals(train_logits, y_train, train_loss) + self._per_seed_totals(
            val_logits, y_val, val_loss
        )
        return torch.stack(totals, dim=1), torch.isfinite(train_loss + val_loss + grad_norm)

    def arch_grads(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor):
        """The gradients the architecture step applies and reads strength from, by ``order``."""
        order = self.config.order
        if order == "second":
            momentum, decay = self.config.w_momentum, self.config.w_weight_decay
            return second_order(self, x_train, y_train, x_val, y_val, momentum=momentum, weight_decay=decay)
        if order == "first":
            return first_order(self, x_val, y_val)
        return first_order(self, x_train, y_train)  # single level: alpha is read on the weight step's batch

    def arch_step(
        self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One architecture update; records this minibatch's strength before the per-seed clipping."""
        grads: ArchGrads = self.arch_grads(x_train, y_train, x_val, y_val)
        logits, loss = grads.logits, grads.loss
        if self.config.order == "single":  # the val batch is only evaluated
            with torch.no_grad():
                logits, loss = self.loss(x_val, y_val, self.op_weights())
        for param, grad in zip(self.arch, [*grads.alpha_grads.values(), *grads.extra_grads]):
            param.grad = grad
        self.accumulator.add(grads.alpha_grads, grads.betas, grads.beta_grads)
        if self.config.a_grad_clip > 0:
            clip_grad_norm_per_seed_(self.arch, self.config.a_grad_clip)
        self.a_opt.step()
        return logits.detach(), loss.detach()

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.w_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            betas = self.op_weights()
        logits, loss = self.loss(x, y, betas)
        loss.sum().backward(inputs=self.weights)
        grad_norm = clip_grad_norm_per_seed_(self.weights, self.config.grad_clip)
        self.w_opt.step()
        return logits.detach(), loss.detach(), grad_norm

    # ------------------------------------------------------------------ back to the seeds
    def write_back(self, members: Sequence[SeedSearch]) -> None:
        """Put each seed's slice of the stacked state into its own SeedSearch: weights, buffers, both optimiser
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
    """The seeds' own batches as one ``(K, B, ...)`` batch (for one seed, a view of its batch)."""
    images, labels = zip(*batches)
    if len(batches) == 1:
        return images[0].unsqueeze(0), labels[0].unsqueeze(0)
    return torch.stack(images), torch.stack(labels)


def _squeezed(value):
    """One seed's slice of a stacked tensor, or of each tensor of a dict of them (a view, no copy)."""
    if isinstance(value, dict):
        return {name: tensor.squeeze(0) for name, tensor in value.items()}
    return value.squeeze(0)
