"""DARTS primitives, building blocks and cell topology, shared by the search supernets and the eval networks.

The blocks follow quark0/darts so parameter counts and behaviour match the published networks; the only
switch between the two uses is ``affine`` (False in the supernets, where BN scale/shift would compete with
the architecture weights; True in the eval networks).

Cell topology (the canonical edge order, i.e. the rows of the alpha tables): intermediate node ``i``
(0-based, ``0..steps-1``) has ``2 + i`` incoming edges, from states ``0..1+i`` where states 0 and 1 are the
two cell inputs and state ``2 + i`` is node ``i``. Rows list node 0's edges, then node 1's, ...; with
4 nodes that gives 2 + 3 + 4 + 5 = 14 rows.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch
from torch import nn

from searchspaces.base import SearchSpaceError

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""Op names in DARTS order; column ``o`` of an alpha table is ``PRIMITIVES[o]``."""

NONE_INDEX = PRIMITIVES.index("none")
assert NONE_INDEX == 0, "the supernets skip 'none' by slicing columns 1: off the mixing weights"

CELL_TYPES: tuple[str, ...] = ("normal", "reduce")
NUM_NODES = 4
"""Intermediate nodes per cell in the DARTS space (the genotype format fixes this)."""


def cell_edges(steps: int = NUM_NODES) -> tuple[tuple[int, int], ...]:
    """``(node, input_state)`` for every row of the alpha table of a cell with ``steps`` nodes."""
    return tuple((node, inp) for node in range(steps) for inp in range(2 + node))


EDGES: tuple[tuple[int, int], ...] = cell_edges()
"""Row -> (node, input state) for the 4-node DARTS cell; ``len(EDGES) == 14``."""
NUM_EDGES = len(EDGES)


def node_rows(node: int) -> range:
    """The alpha rows of ``node``'s incoming edges (inputs ``0..node+1`` in order)."""
    start = node * (node + 3) // 2  # sum_{j<node} (2 + j)
    return range(start, start + 2 + node)


def edge_row(node: int, input_state: int) -> int:
    """Alpha row of the edge ``input_state -> node``; inverse of ``EDGES[row]``."""
    if not 0 <= input_state <= node + 1:
        raise SearchSpaceError(f"node {node} has inputs 0..{node + 1}, not {input_state}")
    return node_rows(node).start + input_state


# --------------------------------------------------------------------------------------------- blocks
def after_leading_relu(block: nn.Sequential, x_relu: torch.Tensor) -> torch.Tensor:
    """Run ``block`` (which starts with a ReLU) on an input the caller already passed through ReLU.

    Why: in a supernet every state feeds up to four edges, each with four ops that open with ``ReLU`` (the
    separable and dilated convs; skip at stride 2 too), so the same ReLU would run, and its output be held
    for backward, sixteen times. The cells compute ``relu(state)`` once and call those ops with
    ``preactivated=True`` (through ``__call__``, so module hooks still fire); the values are the same, and the
    module tree (so every state_dict) is unchanged.
    """
    for layer in islice(block, 1, None):
        x_relu = layer(x_relu)
    return x_relu


class ReLUConvBN(nn.Module):
    """ReLU -> conv -> BN: the cell-input preprocessing and the generic conv block."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (``dil_conv_*`` with dilation 2)."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    accepts_preactivated = True

    def forward(self, x: torch.Tensor, preactivated: bool = False) -> torch.Tensor:
        """``preactivated``: ``x`` is already ``relu(input)`` (see :func:`after_leading_relu`)."""
        return after_leading_relu(self.op, x) if preactivated else self.op(x)


class SepConv(nn.Module):
    """Two stacked separable convs (the first carries the stride), as in DARTS' ``sep_conv_*``."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    accepts_preactivated = True

    def forward(self, x: torch.Tensor, preactivated: bool = False) -> torch.Tensor:
        """``preactivated``: ``x`` is already ``relu(input)`` (see :func:`after_leading_relu`)."""
        return after_leading_relu(self.op, x) if preactivated else self.op(x)


class Identity(nn.Module):
    """skip_connect at stride 1; its own class so the eval cells can exempt it from drop-path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op (all zeros, strided like the other ops). The supernets never call it: 'none' adds
    nothing to a weighted sum, so they skip it instead; it exists for completeness of :data:`OPS`."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing every other pixel: two 1x1 stride-2 convs, the second offset by
    one pixel, concatenated. Used for skip_connect at stride 2 and to align the previous-previous state after
    a reduction cell. Expects even spatial sizes (as DARTS does)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        half = C_out // 2
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, half, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - half, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    accepts_preactivated = True

    def forward(self, x: torch.Tensor, preactivated: bool = False) -> torch.Tensor:
        """``preactivated``: ``x`` is already ``relu(input)`` (see :func:`after_leading_relu`)."""
        if not preactivated:
            x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def preactivated_flags(ops: nn.ModuleList) -> tuple[bool, ...]:
    """Which ops of a mixed edge open with a ReLU and take ``preactivated=True``; read once, at build time,
    so the forward pass does no attribute lookups."""
    return tuple(getattr(op, "accepts_preactivated", False) for op in ops)


def apply_ops(
    ops: nn.ModuleList, flags: tuple[bool, ...], x: torch.Tensor, x_relu: torch.Tensor | None
) -> list[torch.Tensor]:
    """Every op of a mixed edge on ``x``; those flagged (:func:`preactivated_flags`) get the one shared
    ``relu(x)``, computed here when the caller has none."""
    if x_relu is None:
        x_relu = torch.relu(x)
    return [op(x_relu, preactivated=True) if takes_relu else op(x) for op, takes_relu in zip(ops, flags)]


OpFactory = Callable[[int, int, bool], nn.Module]
OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}
"""``OPS[name](C, stride, affine)`` builds the primitive ``name`` mapping C channels to C channels."""


def search_op(name: str, C: int, stride: int) -> nn.Module:
    """A primitive as used inside a supernet's mixed op: BN without affine, and pools followed by a
    BN(affine=False) so their output scale is comparable to the convs' (DARTS' MixedOp)."""
    op = OPS[name](C, stride, False)
    if "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op


def preprocess_inputs(
    C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool, affine: bool
) -> tuple[nn.Module, nn.Module]:
    """Cell input adapters: bring both inputs to ``C`` channels at the cell's input resolution (s0 is one
    step behind after a reduction cell, hence the FactorizedReduce)."""
    pre0 = FactorizedReduce(C_prev_prev, C, affine) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine)
    return pre0, ReLUConvBN(C_prev, C, 1, 1, 0, affine)
