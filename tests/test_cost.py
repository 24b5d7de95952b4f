"""The size of a found cell's evaluation network: the hook-based multiply-add count equals torch's own
FlopCounterMode (halved) on every built-in network, and a cell's cost follows its space's protocol."""

from __future__ import annotations

import pytest
import torch

from ostr_ray.core.cost import cell_cost, measure_network
from searchspaces import get_space
from searchspaces.darts_genotype import DARTS_V2, PC_DARTS

BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _flop_counter_mult_adds(model: torch.nn.Module, resolution: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(
    "space,genotype,kind,resolution,kwargs",
    [
        ("nb201", BEST_NB201, "cifar", 32, {"C": 16, "N": 5}),
        ("darts", DARTS_V2.to_str(), "cifar", 32, {"C": 36, "layers": 20, "auxiliary": True}),
        ("pcdarts", PC_DARTS.to_str(), "imagenet", 224, {"C": 48, "layers": 14, "auxiliary": True}),
    ],
)
def test_hook_count_equals_flop_counter(space, genotype, kind, resolution, kwargs):
    sp = get_space(space)
    model = sp.build_eval_network(sp.parse_genotype(genotype), num_classes=10, dataset_kind=kind, **kwargs)
    assert measure_network(model, resolution)["mult_adds"] == _flop_counter_mult_adds(model, resolution)


def test_cell_cost_follows_the_spaces_protocol():
    nb201 = cell_cost("nb201", BEST_NB201)
    assert nb201["params"] == 1_288_506 and round(nb201["mult_adds_m"], 1) == 184.7  # NB201's 1.29 MB, 184.7 MFLOPs
    darts = cell_cost("darts", DARTS_V2.to_str())
    assert darts["params"] == 3_349_342 and darts["mult_adds"] == 528_359_040  # darts-cifar: C=36, 20 cells
