"""DARTS evaluation networks (train-from-scratch of a searched genotype), after quark0/darts ``model.py``.

``NetworkCIFAR`` / ``NetworkImageNet`` stack discrete cells built from a
:class:`~searchspaces.darts_genotype.DartsGenotype` (affine BN everywhere), with an optional auxiliary head after
cell ``2*layers//3`` and drop-path on every non-identity op. ``drop_path_prob`` is a plain attribute
because the DARTS protocol ramps it linearly over the epochs: the trainer sets
``net.drop_path_prob = p * epoch / epochs`` before each epoch.

Both forwards return ``(logits, aux_logits)``; ``aux_logits`` is None unless the net is in training mode
and was built with ``auxiliary=True``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from searchspaces.base import AUXILIARY_PREFIX, SearchSpaceError
from searchspaces.darts_genotype import DartsGenotype
from searchspaces.darts_ops import NUM_NODES, OPS, Identity, preprocess_inputs


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Drop the whole branch for a random subset of samples (probability ``drop_prob``), scaling the kept
    ones by ``1/(1-drop_prob)`` so the expectation is unchanged. Not in-place, unlike DARTS, so it is safe
    after any op regardless of what that op saved for backward."""
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
    return x * (mask / keep_prob)


class EvalCell(nn.Module):
    """A discrete cell: node ``i`` = op(state) + op(state) for its two genotype pairs; output is the
    concat of the genotype's concat nodes. Ops on the cell inputs are strided in reduction cells."""

    def __init__(
        self,
        genotype: DartsGenotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = preprocess_inputs(C_prev_prev, C_prev, C, reduction_prev, True)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.multiplier = len(self.concat)
        self.inputs = tuple(inp for _, inp in pairs)
        self.ops = nn.ModuleList(OPS[op](C, 2 if reduction and inp < 2 else 1, True) for op, inp in pairs)
        # DARTS never drops an identity branch: dropping the skip path would only add noise to the residual.
        self.droppable = tuple(not isinstance(op, Identity) for op in self.ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        use_drop = self.training and drop_prob > 0.0
        for node in range(NUM_NODES):
            total = None
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.inputs[k]])
                if use_drop and self.droppable[k]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier for an 8x8 feature map (after the second reduction at 32x32 input)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier for a 7x7 feature map (after the second reduction at 224x224 input). Like the
    reference, it has no BN after the 768-channel conv (the published ImageNet results were run so)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),  # 7x7 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _EvalNetwork(nn.Module):
    """Shared cell stack and forward of the CIFAR and ImageNet networks; subclasses provide the stem."""

    def _build_cells(
        self,
        genotype: DartsGenotype,
        C: int,
        layers: int,
        num_classes: int,
        auxiliary: bool,
        C_stem: int,
        reduction_prev: bool,
        aux_head: type[nn.Module],
    ) -> None:
        for name, value in (("C", C), ("layers", layers), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchSpaceError(f"{name} must be a positive int, got {value!r}")
        for attr in ("normal", "normal_concat", "reduce", "reduce_concat"):
            if not hasattr(genotype, attr):
                raise SearchSpaceError(f"expected a DartsGenotype, got {type(genotype).__name__}: {genotype!r}")
        self.layers, self.auxiliary = layers, auxiliary
        self.aux_index = 2 * layers // 3
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        self.cells = nn.ModuleList()
        C_aux = C_prev
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = EvalCell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_index:
                C_aux = C_prev
        if auxiliary:
            self.auxiliary_head = aux_head(C_aux, num_classes)
        # Global pooling; equals DARTS' AvgPool2d(7) on ImageNet's 7x7 map and also works at other sizes.
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux_logits = None
        s0, s1 = self._stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return logits, aux_logits


class NetworkCIFAR(_EvalNetwork):
    """DARTS CIFAR network: 3x3 conv stem with ``3*C`` channels, ``layers`` cells, aux head at 8x8."""

    def __init__(
        self,
        genotype: DartsGenotype,
        C: int = 36,
        layers: int = 20,
        num_classes: int = 10,
        auxiliary: bool = True,
        drop_path_prob: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        self.drop_path_prob = drop_path_prob
        C_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self._build_cells(genotype, C, layers, num_classes, auxiliary, C_stem, False, AuxiliaryHeadCIFAR)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_EvalNetwork):
    """DARTS ImageNet (mobile setting) network: two strided stems take 224x224 to 56x56 (s0) and 28x28
    (s1), so the first cell starts with ``reduction_prev=True``; aux head at 7x7."""

    def __init__(
        self,
        genotype: DartsGenotype,
        C: int = 48,
        layers: int = 14,
        num_classes: int = 1000,
        auxiliary: bool = True,
        drop_path_prob: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        self.drop_path_prob = drop_path_prob
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self._build_cells(genotype, C, layers, num_classes, auxiliary, C, True, AuxiliaryHeadImageNet)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


_NETWORKS: dict[str, tuple[type[_EvalNetwork], int]] = {
    "cifar": (NetworkCIFAR, 10),
    "imagenet": (NetworkImageNet, 1000),
}


def build_eval_network(
    genotype: DartsGenotype, num_classes: int | None = None, *, dataset_kind: str = "cifar", **kwargs: Any
) -> nn.Module:
    """The eval network for ``genotype``: ``dataset_kind="cifar"`` -> :class:`NetworkCIFAR` (32x32 inputs;
    also CIFAR-100 / SVHN with ``num_classes``), ``"imagenet"`` -> :class:`NetworkImageNet` (224x224).
    ``num_classes`` defaults to 10 / 1000; ``kwargs`` go to the network (``C``, ``layers``, ``auxiliary``,
    ``drop_path_prob``, ``in_channels``), defaulting to the DARTS protocol (C=36/20 cells, C=48/14 cells)."""
    try:
        network, default_classes = _NETWORKS[dataset_kind]
    except (KeyError, TypeError):
        raise SearchSpaceError(f"unknown dataset_kind {dataset_kind!r}; choose from {', '.join(_NETWORKS)}") from None
    allowed = set(inspect.signature(network).parameters) - {"genotype", "num_classes"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise SearchSpaceError(
            f"unknown argument(s) {', '.join(map(repr, unknown))} for {network.__name__}; "
            f"accepted: {', '.join(sorted(allowed))}"
        )
    return network(genotype, num_classes=default_classes if num_classes is None else num_classes, **kwargs)


def count_parameters(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Trainable parameters, by default without the auxiliary head (the number papers report)."""
    return sum(
        p.numel() for name, p in model.named_parameters() if include_auxiliary or not name.startswith(AUXILIARY_PREFIX)
    )
