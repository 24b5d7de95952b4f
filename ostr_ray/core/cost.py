"""What a found cell costs once trained: the size (parameters, multiply-adds) of its evaluation network.

One convention for every place that reports it (the retrain command, each trial's MLflow run, the evidence),
measured rather than computed by formula so a new space's network is counted the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ostr_ray.core.config import ConfigError, launch_data_dir, load_yaml_mapping
from searchspaces import get_space
from searchspaces.base import AUXILIARY_PREFIX

FLOPS_CONVENTION = (
    "mult_adds counts one multiply-add per MAC of every conv and linear layer (equal to torch.utils.flop_counter."
    "FlopCounterMode total / 2 for these networks), batch 1, eval mode (no auxiliary head, no drop-path), at "
    "flops_resolution; BN, activations, pooling and additions are not counted. params exclude the auxiliary head."
)


def measure_network(model: nn.Module, resolution: int, in_channels: int = 3) -> dict[str, Any]:
    """Parameters and multiply-adds of ``model``.

    Convention (DARTS / NB201 papers): ``params`` counts trainable parameters without the auxiliary head;
    ``mult_adds`` counts one multiply-accumulate per MAC of every ``Conv2d`` and ``Linear`` (BN, activations,
    pooling and element-wise additions are not counted) for one ``resolution x resolution`` image in eval
    mode, so the auxiliary head and drop-path do not run. With this count DARTS_V2 is 528.4M at 32x32 (CIFAR)
    and 529.9M at 224x224 (ImageNet; the paper's 574M came from a different counter), and NB201 cells match
    the benchmark's MFLOPs. It equals ``torch.utils.flop_counter.FlopCounterMode``'s total / 2 for every
    built-in network (tested), without that counter's 2 s import of ``torch._dynamo`` in each process.
    """
    params = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(AUXILIARY_PREFIX)
    )
    count = [0]

    def conv(module: nn.Conv2d, inputs: Any, output: torch.Tensor) -> None:
        count[0] += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    def linear(module: nn.Linear, inputs: Any, output: torch.Tensor) -> None:
        count[0] += output.numel() * module.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {
        "params": int(params),
        "params_m": params / 1e6,
        "mult_adds": int(count[0]),
        "mult_adds_m": count[0] / 1e6,
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
