"""What a search steps through, for the one epoch loop (:mod:`.search`) and its step (:mod:`.step`):
the optimisers and their cosine schedule, the linear warm-up, and which validation batch each step reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ostr_ray.core.config import SearchConfig
from ostr_ray.data import Batches


def make_optimizers(
    config: SearchConfig, weight_params: list[torch.Tensor], arch_params: list[torch.Tensor]
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR, torch.optim.Adam]:
    """The weight optimiser (SGD with momentum and weight decay), its cosine schedule over the epochs, and the
    architecture optimiser (Adam). A seed group builds the same three over its stacked tensors: every update
    is elementwise, so stacking seeds changes nothing per seed (:mod:`.step`)."""
    w_opt = torch.optim.SGD(
        weight_params, lr=config.w_lr, momentum=config.w_momentum, weight_decay=config.w_weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs, eta_min=config.w_lr_min)
    a_opt = torch.optim.Adam(
        arch_params, lr=config.a_lr, betas=tuple(config.a_betas), weight_decay=config.a_weight_decay
    )
    return w_opt, scheduler, a_opt


def val_batches(val: Batches, epoch: int, steps_per_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The architecture batches of ``epoch``: an endless stream over passes of the validation half.

    Step ``t`` of epoch ``e`` takes global validation batch ``g = e * T + t`` (``T = steps_per_epoch``), i.e.
    batch ``g % V`` of pass ``g // V`` (``V = len(val)``), pass ``p`` ordered as ``val.epoch(p)``: each step
    draws the next batch and the stream restarts when a pass ends (PC-DARTS cycles its valid_queue). The
    position is a pure function of (epoch, step), so a resume at any epoch boundary continues mid-pass
    exactly, with no loader state saved. With equal halves (T == V) epoch ``e`` reads exactly pass ``e``.
    """
    passes, start = divmod(epoch * steps_per_epoch, len(val))
    while True:
        yield from val.epoch(passes, start_batch=start)
        passes, start = passes + 1, 0


@contextlib.contextmanager
def warm_up(optimizer: torch.optim.Optimizer, epoch: int, warmup_epochs: int) -> Iterator[None]:
    """Within the block, epoch ``epoch < warmup_epochs`` trains at ``initial lr * (epoch + 1) / warmup_epochs``
    (PC-DARTS' ImageNet warm-up, on the base lr as its train_search_imagenet.py does); afterwards the
    scheduled lr is put back, so the cosine scheduler's recursive update and a checkpoint never see the
    warm-up and a resume recomputes it from the epoch alone."""
    if epoch >= warmup_epochs:
        yield
        return
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * (epoch + 1) / warmup_epochs
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr
