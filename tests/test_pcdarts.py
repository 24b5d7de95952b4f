"""PC-DARTS space: partial-channel mixed ops, channel shuffle, edge normalisation, registration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ostr_ray.core.config import load_preset
from searchspaces.base import SearchSpaceError, get_space
from searchspaces.darts_eval import build_eval_network, count_parameters
from searchspaces.darts_genotype import PC_DARTS, PRIMITIVES, decode, node_rows, parse_genotype
from searchspaces.pcdarts import PartialMixedOp, PCDartsSupernet, channel_shuffle, per_node_softmax
from tests.test_darts import bf16_search_step, hand_preset_size, hand_small_size, weight_count


def tiny_input(size: int = 16, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def supernet() -> PCDartsSupernet:
    torch.manual_seed(0)
    return PCDartsSupernet(C=8, layers=3, partial_k=4)


def test_registered_space_fields():
    space, darts = get_space("pcdarts"), get_space("darts")
    assert space.name == "pcdarts"
    assert space.build_supernet is PCDartsSupernet
    assert (space.ops, space.cell_types, space.num_edges) == (darts.ops, darts.cell_types, 14)
    assert space.ops == PRIMITIVES and space.alpha_shape == (14, 8)
    assert space.decode is decode and space.parse_genotype is parse_genotype
    assert space.build_eval_network is build_eval_network
    assert space.parameter_free_ops == darts.parameter_free_ops
    assert space.genotype_from_json({**PC_DARTS.to_json(), "space": "pcdarts"}) == PC_DARTS


def test_published_pc_darts_eval_network_size():
    n = count_parameters(build_eval_network(PC_DARTS, dataset_kind="cifar"))
    assert n == 3_634_678 and 3.5e6 <= n <= 3.7e6  # PC-DARTS paper: 3.6M


def test_search_network_size():
    net = PCDartsSupernet()  # paper setting: C=16, 8 cells, K=4
    assert sum(p.numel() for p in net.weight_parameters()) == 299_578  # ~0.3M, 1/K-wide ops


def test_search_network_sizes_match_the_hand_derivation():
    # The DARTS derivation (tests/test_darts.py) with the ops on C/K channels; the bypass max-pool and the
    # channel shuffle have no parameters, edge alphas are architecture parameters.
    # CIFAR, K=4: 1,392 stem + 200,128 edges + 95,488 preprocessing + 2,570 head
    assert hand_preset_size("cifar", 10, k=4) == 1_392 + 200_128 + 95_488 + 2_570 == 299_578
    # ImageNet, K=2 (PC-DARTS' ImageNet search): 31,992 stem + 572,032 edges + 95,488 preprocessing + 257,000 head
    assert hand_preset_size("imagenet", 1000, k=2) == 31_992 + 572_032 + 95_488 + 257_000 == 956_512
    assert weight_count(PCDartsSupernet(num_classes=1000, partial_k=2, stem="imagenet")) == 956_512
    for stem in ("cifar", "imagenet"):
        for k in (2, 4):
            net = PCDartsSupernet(C=8, layers=3, num_classes=7, partial_k=k, stem=stem)
            assert weight_count(net) == hand_small_size(stem, 7, k)


def test_pcdarts_imagenet_preset_builds_the_hand_derived_network():
    """The preset's exact network through the registry (no forward): PC-DARTS' ImageNet search size."""
    values = load_preset("pcdarts-imagenet")
    assert values["space_kwargs"] == {"C": 16, "layers": 8, "partial_k": 2, "stem": "imagenet"}
    net = get_space(values["space"]).build_supernet(num_classes=1000, **values["space_kwargs"])
    assert weight_count(net) == hand_preset_size("imagenet", 1000, k=2) == 956_512


def test_imagenet_supernet_shapes_and_forward_backward_at_224():
    torch.manual_seed(0)
    net = PCDartsSupernet(C=8, layers=3, num_classes=1000, partial_k=2, stem="imagenet").train()
    x = tiny_input(224)
    with torch.no_grad():
        stem0 = net.stem0(x)
        assert tuple(stem0.shape) == (2, 24, 56, 56) and tuple(net.stem1(stem0).shape) == (2, 24, 28, 28)
    logits = net(x)
    assert logits.shape == (2, 1000)
    nn.functional.cross_entropy(logits, torch.tensor([0, 999])).backward()
    assert not [n for n, p in net.named_parameters() if p.grad is None]
    assert all(a.grad.abs().sum() > 0 for a in net.arch_parameters())


@pytest.mark.parametrize("k", [4, 2])
def test_one_search_step_under_bf16_autocast(k):
    """Partial channels under autocast: the ops' bf16 output is mixed by fp32 weights, then concatenated with
    the bypassed channels (this crashed: f288f2c); the genotype is decoded with the edge weights."""
    torch.manual_seed(0)
    val_loss, train_loss, genotype = bf16_search_step(PCDartsSupernet(C=8, layers=3, partial_k=k))
    assert torch.isfinite(val_loss) and torch.isfinite(train_loss)
    assert parse_genotype(genotype.to_str()) == genotype


def test_channel_shuffle_is_a_permutation():
    x = torch.arange(8.0).view(1, 8, 1, 1).expand(2, 8, 3, 3)
    out = channel_shuffle(x, 4)
    assert out[0, :, 0, 0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert sorted(out[1, :, 2, 2].tolist()) == list(range(8))
    y = torch.randn(2, 12, 4, 4)
    torch.testing.assert_close(channel_shuffle(channel_shuffle(y, 4), 3), y)  # inverse: groups C/groups


def test_per_node_softmax():
    alphas = torch.randn(14)
    weights = per_node_softmax(alphas)
    assert weights.shape == (14,)
    for node in range(4):
        rows = list(node_rows(node))
        torch.testing.assert_close(weights[rows].sum(), torch.tensor(1.0))
        torch.testing.assert_close(weights[rows], torch.softmax(alphas[rows], dim=0))


def test_supernet_structure_and_edge_weights(supernet):
    assert set(supernet.edge_alphas) == {"normal", "reduce"}
    assert all(a.shape == (14,) for a in supernet.edge_alphas.values())
    assert len(supernet.arch_parameters()) == 4
    edge_weights = supernet.edge_weights()
    assert set(edge_weights) == {"normal", "reduce"}
    for weights in edge_weights.values():
        assert weights.shape == (14,)
        for node in range(4):
            torch.testing.assert_close(weights[list(node_rows(node))].sum(), torch.tensor(1.0))
    mixed = [m for m in supernet.modules() if isinstance(m, PartialMixedOp)]
    assert len(mixed) == 3 * 14 and all(len(m.ops) == 7 for m in mixed)
    cell_bns = [m for m in supernet.cells.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bns and not any(bn.affine for bn in cell_bns)


def test_supernet_forward_backward(supernet):
    supernet.train()
    supernet.zero_grad()
    logits = supernet(tiny_input())
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([3, 4])).backward()
    for arch in supernet.arch_parameters():
        assert arch.grad is not None and arch.grad.abs().sum() > 0
    assert not [n for n, p in supernet.named_parameters() if p.grad is None]


def test_op_and_edge_weight_arguments_change_the_output(supernet):
    supernet.eval()
    x = tiny_input()
    with torch.no_grad():
        default = supernet(x)
        explicit = supernet(x, supernet.op_weights(), edge_weights=supernet.edge_weights())
        one_hot = {cell: torch.eye(8)[[PRIMITIVES.index("dil_conv_3x3")] * 14] for cell in ("normal", "reduce")}
        other_ops = supernet(x, one_hot)
        uniform = {cell: torch.ones(14) for cell in ("normal", "reduce")}
        other_edges = supernet(x, edge_weights=uniform)
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, other_ops)
    assert not torch.allclose(default, other_edges)
    with pytest.raises(SearchSpaceError, match=r"\(13,\)"):
        supernet(x, edge_weights={"normal": torch.ones(13), "reduce": torch.ones(14)})


@pytest.mark.parametrize("cell_index", [0, 1], ids=["normal", "reduce"])
def test_partial_channels_go_through_the_ops(supernet, cell_index):
    cell = supernet.cells[cell_index]
    C_cell = 8 * (2 if cell.reduction else 1)
    seen: list[int] = []
    hooks = [
        op.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
        for edge in cell.edges
        for op in edge.ops
    ]
    try:
        with torch.no_grad():
            supernet.eval()(tiny_input())
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 14 * 7 and set(seen) == {C_cell // 4}


@pytest.mark.parametrize("stride", [1, 2])
def test_bypass_channels_are_unchanged_apart_from_shuffle(stride):
    torch.manual_seed(0)
    C, k = 8, 4
    op = PartialMixedOp(C, stride, k).eval()
    x = torch.randn(2, C, 8, 8)
    with torch.no_grad():
        out = op(x, torch.softmax(torch.randn(7), dim=0))
    unshuffled = channel_shuffle(out, C // k)
    bypass = x[:, C // k :] if stride == 1 else nn.functional.max_pool2d(x[:, C // k :], 2, 2)
    assert out.shape == (2, C, 8 // stride, 8 // stride)
    torch.testing.assert_close(unshuffled[:, C // k :], bypass)
    with torch.no_grad():  # one-hot on skip_connect (ops[2] == PRIMITIVES[3]): the active slice is its output
        only_skip = channel_shuffle(op(x, torch.eye(7)[2]), C // k)
        torch.testing.assert_close(only_skip[:, : C // k], op.ops[2](x[:, : C // k]))


def test_decode_with_supernet_edge_weights(supernet):
    genotype = decode(
        {cell: a.detach() for cell, a in supernet.alphas.items()},
        {cell: w.detach() for cell, w in supernet.edge_weights().items()},
    )
    assert parse_genotype(genotype.to_str()) == genotype


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"C": 6}, "C=6"), ({"C": 8, "partial_k": 0}, "partial_k"), ({"C": 8, "partial_k": 3}, "partial_k=3")],
)
def test_bad_construction_arguments(kwargs, bad):
    with pytest.raises(SearchSpaceError) as err:
        PCDartsSupernet(layers=3, **kwargs)
    assert bad in str(err.value)
