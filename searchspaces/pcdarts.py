"""The PC-DARTS search space (Xu et al., ICLR 2020): DARTS cells with partial-channel mixed ops and edge
normalisation.

Partial channels cut the supernet's memory and time by ~K: each edge sends only the first ``C/K`` channels
through its mixed op and passes the rest by, then shuffles channels so that a different slice is sampled by
the next edge. Edge normalisation (per-node softmax over learnable edge weights, multiplied into each edge's
output) stabilises the edge selection that partial channels make noisier. Ops, genotype, decoder
(``decode(scores, edge_weights)``) and eval networks are the DARTS ones.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from searchspaces.base import SearchSpace, SearchSpaceError, register_space
from searchspaces.darts import CellSupernet, darts_cell_space
from searchspaces.darts_genotype import (
    CELL_TYPES,
    NUM_NODES,
    PRIMITIVES,
)
from searchspaces.darts_ops import apply_ops, preactivated_flags, search_op

__all__ = ["PCDartsSupernet", "PartialMixedOp", "channel_shuffle", "per_node_softmax"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: view channels as (groups, C/groups), transpose, flatten. Output channel
    ``j * groups + g`` is input channel ``g * (C/groups) + j``."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def per_node_softmax(edge_alphas: torch.Tensor, steps: int = NUM_NODES) -> torch.Tensor:
    """(E,) edge weights: a softmax over each node's incoming edges (rows in canonical edge order)."""
    chunks, start = [], 0
    for node in range(steps):
        chunks.append(torch.softmax(edge_alphas[start : start + 2 + node], dim=0))
        start += 2 + node
    return torch.cat(chunks)


class PartialMixedOp(nn.Module):
    """A PC-DARTS edge: the DARTS mixed op ('none' skipped) on the first ``C//k`` channels, the other
    channels bypassing it (max-pooled 2x2 on stride-2 edges so resolutions match), then a channel shuffle
    with ``k`` groups."""

    uses_state_relu = False
    """The ops see only the first C/k channels, so a slice of the cell's shared ``relu(state)`` would be a
    strided view that every conv copies again; one contiguous ``relu(active)`` per edge is cheaper."""

    def __init__(self, C: int, stride: int, k: int):
        super().__init__()
        self.k = k
        self.partial_channels = C // k
        self.ops = nn.ModuleList(
            search_op(name, self.partial_channels, stride) for name in PRIMITIVES if name != "none"
        )
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()
        self.preactivated = preactivated_flags(self.ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, x_relu: None = None) -> torch.Tensor:
        """``weights``: (7,) mixing weights of ``PRIMITIVES[1:]``. ``x_relu`` is part of the edge interface
        but never given here (``uses_state_relu`` is False): ``relu(active)`` is computed once per edge."""
        active, passive = x[:, : self.partial_channels], x[:, self.partial_channels :]
        outputs = torch.stack(apply_ops(self.ops, self.preactivated, active, None))
        mixed = torch.tensordot(weights.to(outputs.dtype), outputs, dims=1)  # one dtype under bf16 autocast
        if passive.shape[1] == 0:  # k == 1: plain DARTS edge
            return mixed
        return channel_shuffle(torch.cat([mixed, self.bypass(passive)], dim=1), self.k)


class PCDartsSupernet(CellSupernet):
    """The PC-DARTS search network: the DARTS supernet with :class:`PartialMixedOp` edges (``partial_k``
    = K, default 4 as in the paper's CIFAR setting; 2 in its ImageNet search) and ``edge_alphas`` for edge
    normalisation. ``stem="imagenet"`` gives PC-DARTS' ImageNet search network (:class:`CellSupernet`)."""

    def __init__(
        self,
        C: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        steps: int = NUM_NODES,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        partial_k: int = 4,
        stem: str = "cifar",
    ):
        if isinstance(partial_k, bool) or not isinstance(partial_k, int) or partial_k < 1:
            raise SearchSpaceError(f"partial_k must be a positive int, got {partial_k!r}")
        if isinstance(C, int) and C % partial_k:
            raise SearchSpaceError(f"C={C} is not divisible by partial_k={partial_k}")
        make_edge = partial(PartialMixedOp, k=partial_k)
        super().__init__(make_edge, C, layers, num_classes, in_channels, steps, multiplier, stem_multiplier, stem)
        self.partial_k = partial_k
        self.edge_alphas = nn.ParameterDict(
            {cell: nn.Parameter(1e-3 * torch.randn(self.num_edges)) for cell in CELL_TYPES}
        )

    def edge_weights(self) -> dict[str, torch.Tensor]:
        """Per-node softmax of ``edge_alphas``: cell type -> (E,), each node's incoming weights sum to 1."""
        return {cell: per_node_softmax(alpha, self.steps) for cell, alpha in self.edge_alphas.items()}


@register_space("pcdarts")
def pcdarts_space() -> SearchSpace:
    return darts_cell_space("pcdarts", "PC-DARTS", PCDartsSupernet)
