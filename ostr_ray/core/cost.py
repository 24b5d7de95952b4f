"""What a found cell costs once trained: the size (parameters, multiply-adds) of its evaluation network.

One convention for every place that reports it (the retrain command, each trial's MLflow run, the evidence),
measured rather than computed by formula so a new space's network is counted the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ostr_ray.core.config import ConfigError, launch_data_dir, load_yaml_mapping
from searchspaces import get_space
from searchspaces.base import AUXILIARY_PREFIX

FLOPS_CONVENTION = (
    "mult_adds counts one multiply-add per MAC of every conv and linear layer (torch.utils.flop_counter."
    "FlopCounterMode total / 2), batch 1, eval mode (no auxiliary head, no drop-path), at flops_resolution; "
    "BN, activations, pooling and additions are not counted. params exclude the auxiliary head."
)


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


def cell_cost(space_name: str, genotype_text: str, dataset: str = "cifar10", num_classes: int = 10) -> dict[str, Any]:
    """The size of ``genotype_text``'s evaluation network as the space's retraining protocol for ``dataset``
    builds it (``launch/protocols``): what a trial's MLflow run reports, so runs sort by the cost of their cell."""
    space = get_space(space_name)
    protocol = space.protocol_for(dataset)
    recipe = load_yaml_mapping(protocol, launch_data_dir("protocols"), "protocol", ConfigError) if protocol else {}
    network = space.build_eval_network(
        space.parse_genotype(genotype_text),
        num_classes=num_classes,
        dataset_kind=recipe.get("network_kind", "cifar"),
        **(recipe.get("network") or {}),
    )
    return measure_network(network, int(recipe.get("flops_resolution") or 32))
