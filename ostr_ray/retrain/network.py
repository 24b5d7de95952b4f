"""The eval network of a genotype, sized by the protocol, and its size (parameters, multiply-adds)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ostr_ray.core.cost import FLOPS_CONVENTION, measure_network
from ostr_ray.retrain.protocols import RetrainConfig, RetrainError

__all__ = ["FLOPS_CONVENTION", "build_network", "measure_network"]


def build_network(space: str, genotype: Any, config: RetrainConfig, num_classes: int) -> nn.Module:
    """The eval network of ``genotype`` sized by the protocol; forward returns ``(logits, aux_or_None)``."""
    from searchspaces import SearchSpaceError, get_space

    try:
        return get_space(space).build_eval_network(
            genotype, num_classes=num_classes, dataset_kind=config.network_kind, **config.network
        )
    except (SearchSpaceError, TypeError) as exc:
        raise RetrainError(f"cannot build the {space} network with {config.network}: {exc}") from None
