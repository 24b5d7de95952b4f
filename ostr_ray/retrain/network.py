"""The eval network of a genotype, sized by the protocol, and its size (parameters, multiply-adds)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ostr_ray.retrain.protocols import RetrainConfig, RetrainError

FLOPS_CONVENTION = (
    "mult_adds counts one multiply-add per MAC of every conv and linear layer (torch.utils.flop_counter."
    "FlopCounterMode total / 2), batch 1, eval mode (no auxiliary head, no drop-path), at flops_resolution; "
    "BN, activations, pooling and additions are not counted. params exclude the auxiliary head."
)


def build_network(space: str, genotype: Any, config: RetrainConfig, num_classes: int) -> nn.Module:
    """The eval network of ``genotype`` sized by the protocol; forward returns ``(logits, aux_or_None)``."""
    from searchspaces import SearchSpaceError, get_space

    try:
        return get_space(space).build_eval_network(
            genotype, num_classes=num_classes, dataset_kind=config.network_kind, **config.network
        )
    except (SearchSpaceError, TypeError) as exc:
        raise RetrainError(f"cannot build the {space} network with {config.network}: {exc}") from None


def measure_network(model: nn.Module, resolution: int, in_channels: int = 3) -> dict[str, Any]:
    """Parameters and multiply-adds of ``model``.

    Convention (DARTS / NB201 papers): ``params`` counts trainable parameters without the auxiliary head;
    ``mult_adds`` is torch's ``FlopCounterMode`` total divided by 2 (the counter reports 2 FLOPs per
    multiply-accumulate of convs and matmuls/linears; BN, activations, pooling and element-wise additions
    are not counted) for one ``resolution x resolution`` image in eval mode, so the auxiliary head and
    drop-path do not run. With this counter DARTS_V2 is 528.4M at 32x32 (CIFAR) and 529.9M at 224x224
    (ImageNet; the paper's 574M came from a different counter), NB201 cells match the benchmark's MFLOPs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from searchspaces.base import AUXILIARY_PREFIX

    params = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(AUXILIARY_PREFIX)
    )
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
    mult_adds = counter.get_total_flops() // 2
    return {
        "params": int(params),
        "params_m": params / 1e6,
        "mult_adds": int(mult_adds),
        "mult_adds_m": mult_adds / 1e6,
        "flops_resolution": resolution,
        "flops_convention": FLOPS_CONVENTION,
    }
