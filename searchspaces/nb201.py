"""NAS-Bench-201: the fused weight-sharing supernet, the eval network (TinyNetwork) and the registration.

Both networks follow NB201's macro skeleton: a 3x3 stem, three stages of ``N`` cells at widths ``C, 2C, 4C``
joined by ResNet reduction blocks, and a BN-ReLU-pool-linear head. The genotype and its decoder live in
:mod:`searchspaces.nb201_genotype`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from searchspaces.base import Scores, SearchSpace, SearchSpaceError, Supernet, register_space
from searchspaces.nb201_genotype import (
    CONV1,
    CONV3,
    EDGE_INDEX,
    EDGE_LABELS,
    EDGES,
    NUM_NODES,
    OPS,
    PARAMETER_FREE_OPS,
    POOL,
    SHORT_OPS,
    SKIP,
    NB201Genotype,
    decode,
    genotype_from_json,
    parse_genotype,
)

_BN_EPS = 1e-5


# ------------------------------------------------------------------------------------------- building blocks


class ReLUConvBN(nn.Sequential):
    """NB201's ``nor_conv``: ReLU, conv (no bias: the BN right after cancels it), BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class ResNetReduction(nn.Module):
    """NB201's reduction block between stages: two ReLUConvBN 3x3 (stride 2, then 1) plus an
    AvgPool2d(2, 2) + 1x1 conv shortcut, added."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, stride=1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _stage_widths(C: int, N: int) -> list[int | None]:
    """Cell widths in network order, ``None`` marking a reduction block: N x C, R, N x 2C, R, N x 4C."""
    return [C] * N + [None] + [2 * C] * N + [None] + [4 * C] * N


def _check_sizes(C: int, N: int, num_classes: int, in_channels: int) -> None:
    for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SearchSpaceError(f"NB201 {name} must be a positive int, got {value!r}")


class _Backbone(nn.Module):
    """Stem, the cell/reduction sequence and the head shared by the supernet and the eval network."""

    def __init__(
        self, C: int, N: int, num_classes: int, in_channels: int, make_cell: Callable[[int], nn.Module]
    ) -> None:
        super().__init__()
        _check_sizes(C, N, num_classes, in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        width = C
        for cell_width in _stage_widths(C, N):
            if cell_width is None:
                layers.append(ResNetReduction(width, 2 * width))
                width *= 2
            else:
                layers.append(make_cell(cell_width))
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(width, num_classes)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.lastact(x), 1), 1))


# --------------------------------------------------------------------------------------------- supernet


_OUT_EDGES: tuple[tuple[int, ...], ...] = tuple(
    tuple(EDGE_INDEX[(to, src)] for to in range(src + 1, NUM_NODES)) for src in range(NUM_NODES - 1)
)
"""Per source node, the rows of its outgoing edges in target order: ((0, 1, 3), (2, 4), (5,))."""


class _CellMixing:
    """The op weights of one forward pass laid out for a fused cell of width ``C``.

    Built once per width per forward (all cells share alpha), so the cells do no per-edge Python work.
    For source node ``j`` with ``k`` outgoing edges: ``conv3_scale[j]`` / ``conv1_scale[j]`` are the
    ``(k*C,)`` per-channel factors applied after the conv BN; :meth:`skip_and_pool` gives
    ``(1, k, 1, 1, 1)`` factors broadcast over the stacked per-target contributions.
    """

    def __init__(self, weights: torch.Tensor, C: int) -> None:
        def per_channel(rows: tuple[int, ...], op: int) -> torch.Tensor:
            return weights[list(rows), op].repeat_interleave(C)

        def per_target(rows: tuple[int, ...], op: int) -> torch.Tensor:
            return weights[list(rows), op].view(1, len(rows), 1, 1, 1)

        self.conv3_scale = [per_channel(rows, CONV3) for rows in _OUT_EDGES]
        self.conv1_scale = [per_channel(rows, CONV1) for rows in _OUT_EDGES]
        self._skip = [per_target(rows, SKIP) for rows in _OUT_EDGES]
        self._pool = [per_target(rows, POOL) for rows in _OUT_EDGES]
        self._cast: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def skip_and_pool(self, src: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The skip / pool factors in the activations' dtype, so bf16/fp16 activations (autocast) are not
        promoted to float32 by the float32 weights; cast once per dtype and forward."""
        if dtype not in self._cast:
            self._cast[dtype] = ([w.to(dtype) for w in self._skip], [w.to(dtype) for w in self._pool])
        skip, pool = self._cast[dtype]
        return skip[src], pool[src]


class FusedSearchCell(nn.Module):
    """An NB201 search cell computing every mixed op, fused per source node.

    A mixed edge ``i <- j`` is ``sum_o w[o] * op_o(x_j)``. All edges leaving node ``j`` read the same
    ``x_j``, so per source node this runs one ReLU, one 3x3 conv and one 1x1 conv producing the outputs of
    all its outgoing edges at once (out channels ``k*C``), and one avg-pool shared by them. The BN is NB201's
    search BN (``affine=False``, batch statistics always: NB201 searches with ``track_running_stats=False``),
    its output scaled per channel by the op weight.
    ``'none'`` is never computed: its contribution is zero whatever its weight. Mathematically identical to
    six independent MixedOps (NB201's ReLUConvBN conv bias is cancelled by the batch-statistics BN).
    """

    def __init__(self, C: int) -> None:
        super().__init__()
        self.C = C
        self.conv3 = nn.ParameterList([nn.Parameter(torch.empty(len(rows) * C, C, 3, 3)) for rows in _OUT_EDGES])
        self.conv1 = nn.ParameterList([nn.Parameter(torch.empty(len(rows) * C, C, 1, 1)) for rows in _OUT_EDGES])
        for weight in [*self.conv3, *self.conv1]:
            # Same init as one nn.Conv2d per edge: fan-in is C * k * k regardless of the fusion.
            nn.init.kaiming_uniform_(weight, a=5**0.5)

    def _conv_bn(self, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, padding: int) -> torch.Tensor:
        """Conv, weightless batch-statistics BN, then the op weights per channel. Folding the op weight into
        BN's affine weight would save one multiply, but a seed group vmaps it with a weight per seed, which
        vmap serves by splitting BN into one call per seed; a weightless BN is one call for all seeds."""
        y = F.conv2d(x, weight, padding=padding)
        normed = F.batch_norm(y, None, None, training=True, eps=_BN_EPS)
        return normed * scale.to(normed.dtype).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, mixing: _CellMixing) -> torch.Tensor:
        nodes = [x]
        inbox: list[list[torch.Tensor]] = [[] for _ in range(NUM_NODES)]
        for src, rows in enumerate(_OUT_EDGES):
            x_src = nodes[src]
            batch, _, height, width = x_src.shape
            shape = (batch, len(rows), self.C, height, width)
            relu = F.relu(x_src)
            conv = self._conv_bn(relu, self.conv3[src], mixing.conv3_scale[src], 1).view(shape)
            conv = conv + self._conv_bn(relu, self.conv1[src], mixing.conv1_scale[src], 0).view(shape)
            skip, pool = mixing.skip_and_pool(src, x_src.dtype)
            contributions = conv + skip * x_src.unsqueeze(1) + pool * _avg_pool_3x3(x_src).unsqueeze(1)
            for position, target in enumerate(range(src + 1, NUM_NODES)):
                inbox[target].append(contributions[:, position])
            nodes.append(_sum(inbox[src + 1]))
        return nodes[-1]


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


class NB201Supernet(Supernet):
    """NB201's weight-sharing network: every cell edge mixes all 5 ops; one alpha (6x5) for all cells."""

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.backbone = _Backbone(C, N, num_classes, in_channels, FusedSearchCell)
        self.alphas = nn.ParameterDict({"normal": nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))})
        self._cell_widths = sorted({w for w in _stage_widths(C, N) if w is not None})

    def forward(self, x: torch.Tensor, op_weights: Scores | None = None) -> torch.Tensor:
        weights = self._normal_weights(self.op_weights() if op_weights is None else op_weights)
        mixing = {width: _CellMixing(weights, width) for width in self._cell_widths}
        x = self.backbone.stem(x)
        for layer in self.backbone.cells:
            x = layer(x, mixing[layer.C]) if isinstance(layer, FusedSearchCell) else layer(x)
        return self.backbone.head(x)

    @staticmethod
    def _normal_weights(op_weights: Scores) -> torch.Tensor:
        weights = op_weights.get("normal") if isinstance(op_weights, Mapping) else None
        if weights is None or tuple(weights.shape) != (len(EDGES), len(OPS)):
            shape = None if weights is None else tuple(weights.shape)
            raise SearchSpaceError(
                f"NB201 op_weights must be {{'normal': ({len(EDGES)}, {len(OPS)}) tensor}}, got {shape}"
            )
        return weights


# --------------------------------------------------------------------------------------------- eval network


class InferCell(nn.Module):
    """A discrete NB201 cell (affine BN). ``'none'`` edges are skipped; a node with no kept input is zero,
    and it still feeds its outgoing ops, exactly as NB201's zero op would."""

    def __init__(self, genotype: NB201Genotype, C: int) -> None:
        super().__init__()
        self.kept_edges = [(EDGES[row], op) for row, op in enumerate(genotype.ops) if op != "none"]
        self.layers = nn.ModuleList([_discrete_op(op, C) for _, op in self.kept_edges])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inbox: list[list[torch.Tensor]] = [[] for _ in range(NUM_NODES)]
        nodes = [x]
        for to_node in range(1, NUM_NODES):
            for ((target, src), _), layer in zip(self.kept_edges, self.layers, strict=True):
                if target == to_node:
                    inbox[to_node].append(layer(nodes[src]))
            nodes.append(_sum(inbox[to_node]) if inbox[to_node] else torch.zeros_like(x))
        return nodes[-1]


def _discrete_op(op: str, C: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3)
    raise SearchSpaceError(f"NB201 op {op!r} has no discrete module")


class TinyNetwork(nn.Module):
    """NB201's discrete network for one cell; ``forward`` returns ``(logits, None)`` (no auxiliary head)."""

    def __init__(
        self, genotype: NB201Genotype, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        if not isinstance(genotype, NB201Genotype):
            raise SearchSpaceError(f"TinyNetwork needs an NB201Genotype, got {type(genotype).__name__}")
        self.genotype = genotype
        self.backbone = _Backbone(C, N, num_classes, in_channels, lambda width: InferCell(genotype, width))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.backbone.stem(x)
        for layer in self.backbone.cells:
            x = layer(x)
        return self.backbone.head(x), None


# --------------------------------------------------------------------------------------------- registration

_SIZE_KWARGS = frozenset({"C", "N", "num_classes", "in_channels"})


def _check_kwargs(kwargs: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(kwargs) - _SIZE_KWARGS)
    if unknown:
        raise SearchSpaceError(f"unknown NB201 {what} arguments {unknown}; accepted: {sorted(_SIZE_KWARGS)}")


def build_supernet(**kwargs: Any) -> NB201Supernet:
    """``NB201Supernet(C=16, N=5, num_classes=10, in_channels=3)``; unknown arguments are an error."""
    _check_kwargs(kwargs, "supernet")
    return NB201Supernet(**kwargs)


def build_eval_network(genotype: NB201Genotype | str, *, dataset_kind: str = "cifar", **kwargs: Any) -> TinyNetwork:
    """``TinyNetwork(genotype, C=16, N=5, num_classes=10, in_channels=3)``; strings are parsed first. NB201 has
    one network family, the CIFAR-style TinyNetwork (also used for ImageNet16-120)."""
    if dataset_kind != "cifar":
        raise SearchSpaceError(f"NB201 has no {dataset_kind!r} evaluation network; only 'cifar' (TinyNetwork)")
    _check_kwargs(kwargs, "eval network")
    if isinstance(genotype, str):
        genotype = parse_genotype(genotype)
    return TinyNetwork(genotype, **kwargs)


@register_space("nb201")
def nb201_space() -> SearchSpace:
    return SearchSpace(
        name="nb201",
        ops=OPS,
        cell_types=("normal",),
        num_edges=len(EDGES),
        build_supernet=build_supernet,
        decode=decode,
        parse_genotype=parse_genotype,
        genotype_from_json=genotype_from_json,
        build_eval_network=build_eval_network,
        parameter_free_ops=PARAMETER_FREE_OPS,
        display_name="NAS-Bench-201",
        short_ops=SHORT_OPS,
        edge_labels=EDGE_LABELS,
        cell_drawing="nb201",
        default_preset="nb201-cifar10",
        default_protocols={"default": "nb201"},
        benchmark="nb201",
    )
