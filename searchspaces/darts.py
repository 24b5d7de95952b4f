"""The DARTS search space (Liu et al., ICLR 2019): the weight-sharing supernet and the space's registration.

The genotype, its text forms and the decoder live in :mod:`searchspaces.darts_genotype`; the evaluation
networks in :mod:`searchspaces.darts_eval`; the ops in :mod:`searchspaces.darts_ops`. PC-DARTS
(:mod:`searchspaces.pcdarts`) reuses the supernet skeleton from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from searchspaces.base import Scores, SearchSpace, SearchSpaceError, Supernet, register_space
from searchspaces.darts_eval import build_eval_network
from searchspaces.darts_genotype import (
    CELL_TYPES,
    EDGE_LABELS,
    NUM_EDGES,
    NUM_NODES,
    PARAMETER_FREE_OPS,
    PRIMITIVES,
    SHORT_OPS,
    DartsGenotype,
    as_index,
    decode,
    parse_genotype,
)
from searchspaces.darts_ops import NONE_INDEX, apply_ops, cell_edges, preactivated_flags, preprocess_inputs, search_op

__all__ = ["STEMS", "CellSupernet", "DartsSupernet", "MixedOp", "SearchCell"]

STEMS = ("cifar", "imagenet")
"""Search-network stems: ``cifar`` (DARTS: one 3x3 conv, resolution kept) and ``imagenet`` (PC-DARTS'
direct ImageNet search: three stride-2 3x3 convs, 224 -> 28, before the first cell)."""


# ------------------------------------------------------------------------------------------- supernet
class MixedOp(nn.Module):
    """One supernet edge: the weighted sum of every primitive but 'none'. 'none' is the zero map, so its
    term is dropped instead of computed; its weight then simply receives zero gradient, as in DARTS."""

    uses_state_relu = True
    """The cell hands this edge ``relu(state)``, computed once per state (see :class:`SearchCell`)."""

    def __init__(self, C: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(search_op(name, C, stride) for name in PRIMITIVES if name != "none")
        self.preactivated = preactivated_flags(self.ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, x_relu: torch.Tensor | None = None) -> torch.Tensor:
        """``weights``: (7,) mixing weights of ``PRIMITIVES[1:]``; ``x_relu``: ``relu(x)`` if the caller has it
        (the ops that open with a ReLU then share it, see :func:`~searchspaces.darts_ops.after_leading_relu`)."""
        # One matrix-vector product instead of 7 scaled adds: fewer autograd nodes on the hot path. Under bf16
        # autocast the ops return bf16 while the mixing weights stay fp32: tensordot needs one dtype.
        outputs = torch.stack(apply_ops(self.ops, self.preactivated, x, x_relu))
        return torch.tensordot(weights.to(outputs.dtype), outputs, dims=1)


EdgeFactory = Callable[[int, int], nn.Module]
"""``make_edge(C, stride)`` -> module with ``forward(x, weights, x_relu)``: the mixed op of a supernet."""


class SearchCell(nn.Module):
    """A supernet cell: every intermediate node sums all its incoming mixed edges, optionally each scaled
    by an edge weight; output is the concat of the last ``multiplier`` nodes."""

    def __init__(
        self,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        steps: int,
        multiplier: int,
        make_edge: EdgeFactory,
    ):
        super().__init__()
        self.reduction = reduction
        self.cell_type = "reduce" if reduction else "normal"
        self.steps, self.multiplier = steps, multiplier
        self.preprocess0, self.preprocess1 = preprocess_inputs(C_prev_prev, C_prev, C, reduction_prev, False)
        self.edges = nn.ModuleList(make_edge(C, 2 if reduction and inp < 2 else 1) for _, inp in cell_edges(steps))
        self.share_relu = all(getattr(edge, "uses_state_relu", False) for edge in self.edges)

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        op_rows: Sequence[torch.Tensor],
        edge_scales: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        # relu(state) once per state, shared by every edge it feeds, when the edges take it (else each edge
        # computes its own, once for all its ReLU-led ops)
        activated = [torch.relu(h) if self.share_relu else None for h in states]
        row = 0
        for node in range(self.steps):
            outs = [self.edges[row + j](h, op_rows[row + j], a) for j, (h, a) in enumerate(zip(states, activated))]
            if edge_scales is not None:
                outs = [out * edge_scales[row + j] for j, out in enumerate(outs)]
            row += len(states)
            states.append(sum(outs[1:], outs[0]))
            if node < self.steps - 1:  # the last node feeds no edge
                activated.append(torch.relu(states[-1]) if self.share_relu else None)
        return torch.cat(states[-self.multiplier :], dim=1)


def imagenet_stem(in_channels: int, C_stem: int) -> tuple[nn.Sequential, nn.Sequential]:
    """PC-DARTS' ImageNet search stem (``model_search_imagenet.py``): ``stem0`` = two stride-2 3x3 convs
    (to ``C_stem // 2``, then ``C_stem``) with BN and a ReLU between them, ``stem1`` = ReLU, one more
    stride-2 3x3 conv, BN. Cell 0 gets ``stem0``'s output (one reduction behind) and ``stem1``'s.

    Why three stride-2 convs: at 224 x 224 the cells would otherwise run on 50x more pixels than on CIFAR;
    at 28 x 28 the supernet costs about what the CIFAR one does. The ReLUs are not in place (the reference's
    are): cell 0's first preprocessing applies its own ReLU to ``stem0``'s output, so the values agree.
    """
    half = C_stem // 2
    stem0 = nn.Sequential(
        nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=False),
        nn.Conv2d(half, C_stem, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C_stem),
    )
    stem1 = nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C_stem, C_stem, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C_stem),
    )
    return stem0, stem1


class CellSupernet(Supernet):
    """The DARTS search network skeleton (stem, ``layers`` cells with reductions at ``layers//3`` and
    ``2*layers//3``, global pool, linear head), parameterised by the mixed-op factory so DARTS and PC-DARTS
    share it. Forward takes the op mixing weights explicitly (see :mod:`searchspaces.base`).

    ``stem`` picks the input stem (:data:`STEMS`): ``cifar`` feeds one stem output to both inputs of cell 0;
    ``imagenet`` (:func:`imagenet_stem`) feeds it a state one reduction behind, so cell 0 aligns its first
    input with a FactorizedReduce as if a reduction cell preceded it (PC-DARTS: ``reduction_prev = True``).
    """

    def __init__(
        self,
        make_edge: EdgeFactory,
        C: int,
        layers: int,
        num_classes: int,
        in_channels: int,
        steps: int,
        multiplier: int,
        stem_multiplier: int,
        stem: str = "cifar",
    ):
        super().__init__()
        if stem not in STEMS:
            raise SearchSpaceError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        for name, value in (
            ("C", C),
            ("layers", layers),
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("steps", steps),
            ("stem_multiplier", stem_multiplier),
        ):
            if as_index(value, name) < 1:
                raise SearchSpaceError(f"{name} must be >= 1, got {value!r}")
        if not 1 <= multiplier <= steps:
            raise SearchSpaceError(f"multiplier must be in 1..steps={steps}, got {multiplier!r}")
        self.steps, self.num_edges = steps, len(cell_edges(steps))
        self.stem_kind = stem
        C_stem = stem_multiplier * C
        # The stem BNs keep their affine parameters, as in DARTS' search networks; only cell BNs drop them.
        if stem == "imagenet":
            self.stem0, self.stem1 = imagenet_stem(in_channels, C_stem)
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        self.cells = nn.ModuleList()
        reduction_prev = stem == "imagenet"
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            self.cells.append(
                SearchCell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, steps, multiplier, make_edge)
            )
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.alphas = nn.ParameterDict(
            {cell: nn.Parameter(1e-3 * torch.randn(self.num_edges, len(PRIMITIVES))) for cell in CELL_TYPES}
        )

    def _checked_weights(self, table: Scores, what: str, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        try:
            out = {cell: table[cell] for cell in CELL_TYPES}
        except KeyError as err:
            raise SearchSpaceError(f"{what} lack cell type {err.args[0]!r}") from None
        for cell, w in out.items():
            if tuple(w.shape) != shape:
                raise SearchSpaceError(f"{what}[{cell!r}] has shape {tuple(w.shape)}, expected {shape}")
        return out

    def forward(
        self, x: torch.Tensor, op_weights: Scores | None = None, *, edge_weights: Scores | None = None
    ) -> torch.Tensor:
        """Logits. ``op_weights`` (cell type -> (E, 8)) default to ``softmax(alphas)``; ``edge_weights``
        (cell type -> (E,)) scale each edge's output and default to :meth:`edge_weights` (none for DARTS)."""
        op_weights = self.op_weights() if op_weights is None else op_weights
        op_weights = self._checked_weights(op_weights, "op_weights", (self.num_edges, len(PRIMITIVES)))
        op_rows = {cell: w[:, NONE_INDEX + 1 :].unbind(0) for cell, w in op_weights.items()}
        edge_weights = self.edge_weights() if edge_weights is None else edge_weights
        edge_rows: dict[str, Sequence[torch.Tensor] | None] = dict.fromkeys(CELL_TYPES)
        if edge_weights:
            edge_rows.update(
                (cell, w.unbind(0))
                for cell, w in self._checked_weights(edge_weights, "edge_weights", (self.num_edges,)).items()
            )
        if self.stem_kind == "imagenet":
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, op_rows[cell.cell_type], edge_rows[cell.cell_type])
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))


class DartsSupernet(CellSupernet):
    """The DARTS search network (defaults: the paper's CIFAR-10 search setting; ``stem="imagenet"`` for a
    direct ImageNet search, see :class:`CellSupernet`)."""

    def __init__(
        self,
        C: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        steps: int = NUM_NODES,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        stem: str = "cifar",
    ):
        super().__init__(MixedOp, C, layers, num_classes, in_channels, steps, multiplier, stem_multiplier, stem)


def darts_cell_space(name: str, display_name: str, supernet: Callable[..., CellSupernet]) -> SearchSpace:
    """A space of DARTS cells: the DARTS genotype, decoder, eval networks and metadata around ``supernet``
    (DARTS' own, or PC-DARTS' partial-channel one)."""
    return SearchSpace(
        name=name,
        ops=PRIMITIVES,
        cell_types=CELL_TYPES,
        num_edges=NUM_EDGES,
        build_supernet=supernet,
        decode=decode,
        parse_genotype=parse_genotype,
        genotype_from_json=DartsGenotype.from_json,
        build_eval_network=build_eval_network,
        parameter_free_ops=PARAMETER_FREE_OPS,
        display_name=display_name,
        short_ops=SHORT_OPS,
        edge_labels=EDGE_LABELS,
        cell_drawing="darts",
        default_preset=f"{name}-cifar10",
        default_protocols={"imagenet": "darts-imagenet", "default": "darts-cifar"},
    )


@register_space("darts")
def darts_space() -> SearchSpace:
    return darts_cell_space("darts", "DARTS", DartsSupernet)
