"""Operation strength of one batch at a chosen precision, on any device: the check behind ``amp: bf16``.

``amp: bf16`` applies on CUDA only (:mod:`.placement`), so a search on a CPU machine never runs bf16. Before
anyone opts a search into bf16, the question is whether strength still ranks the ops as fp32 does; this reads
one batch's strength through the architecture step's own maths with the forward under autocast to a chosen
dtype on the searcher's device (CPU autocast included), so a CPU test and the GPU check can both compare it
with fp32's. Nothing here changes how a search runs.
"""

from __future__ import annotations

import torch

from ostr_ray.core.arch_grads import first_order
from ostr_ray.core.search import Searcher


def strength_at(
    searcher: Searcher, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """``|dL/d alpha|`` per cell type (float64, CPU) of the first-order architecture gradient on ``(x, y)``,
    the forward under autocast to ``dtype`` (None: fp32), as the architecture step computes it; no update
    is applied (BatchNorm running statistics, which the search never reads, do move)."""
    step = searcher.step()
    configured = step.autocast_dtype
    step.autocast_dtype = dtype  # what the step's forward reads; on CUDA, ``amp: bf16`` sets the same
    try:
        grads = first_order(step, x.unsqueeze(0), y.unsqueeze(0))
    finally:
        step.autocast_dtype = configured
    return {cell: grad[0].detach().abs().double().cpu() for cell, grad in grads.alpha_grads.items()}
