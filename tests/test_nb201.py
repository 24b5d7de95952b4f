"""NAS-Bench-201 space: genotype strings and codes, decode, the fused supernet and the eval network."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from searchspaces.base import SearchSpaceError, get_space
from searchspaces.nb201 import (
    FusedSearchCell,
    NB201Supernet,
    TinyNetwork,
    _CellMixing,
    build_eval_network,
    build_supernet,
)
from searchspaces.nb201_genotype import (
    EDGES,
    OPS,
    NB201Genotype,
    all_genotypes,
    decode,
    genotype_from_json,
    parse_genotype,
)

BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def _images(batch: int = 2, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- genotype


def test_published_string_parses_and_prints_unchanged() -> None:
    genotype = NB201Genotype.from_string(BEST_CIFAR10)
    assert genotype.to_str() == BEST_CIFAR10 == str(genotype)
    assert genotype.ops == ("nor_conv_3x3",) * 3 + ("skip_connect", "nor_conv_3x3", "nor_conv_3x3")


def test_string_and_code_round_trip_all_cells() -> None:
    seen = set()
    for code, genotype in enumerate(all_genotypes()):
        assert genotype.code == code
        assert NB201Genotype.from_code(code) == genotype
        assert NB201Genotype.from_string(genotype.to_str()) == genotype
        seen.add(genotype.to_str())
    assert len(seen) == 5**6


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "2"),  # two nodes
        (BEST_CIFAR10 + "+|none~0|", "4"),  # four nodes
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "1 inputs"),
        ("|conv_5x5~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|", "conv_5x5"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|skip_connect~0|none~1|none~2|", "nor_conv_3x3~1"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3|+|skip_connect~0|none~1|none~2|", "nor_conv_3x3"),
        ("nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|", "nor_conv_3x3~0|"),
        ("|nor_conv_3x3~0+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|", "|nor_conv_3x3~0"),
        ("|nor_conv_3x3~00|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|", "~00"),
        ("", "1 '+'-separated"),
    ],
)
def test_malformed_strings_name_the_bad_value(text: str, bad: str) -> None:
    with pytest.raises(SearchSpaceError) as info:
        NB201Genotype.from_string(text)
    assert bad in str(info.value)


def test_bad_ops_and_codes_are_rejected() -> None:
    with pytest.raises(SearchSpaceError, match="sep_conv_3x3"):
        NB201Genotype(("sep_conv_3x3",) + ("none",) * 5)
    with pytest.raises(SearchSpaceError, match="5 ops"):
        NB201Genotype(("none",) * 5)
    for code in (-1, 5**6, 1.0, True):
        with pytest.raises(SearchSpaceError, match="code"):
            NB201Genotype.from_code(code)  # type: ignore[arg-type]


def test_json_round_trip_and_edge_choices() -> None:
    genotype = NB201Genotype.from_string("|none~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|none~2|")
    assert genotype.to_json() == {"space": "nb201", "arch": genotype.to_str()}
    assert NB201Genotype.from_json(genotype.to_json()) == genotype
    assert genotype_from_json(genotype.to_json()) == genotype
    assert parse_genotype(json.dumps(genotype.to_json())) == genotype
    assert parse_genotype(genotype.to_str()) == genotype
    assert genotype.edge_choices() == {"normal": {1: OPS.index("skip_connect"), 2: 2, 3: 4}}
    with pytest.raises(SearchSpaceError, match="darts"):
        NB201Genotype.from_json({"space": "darts", "arch": genotype.to_str()})
    with pytest.raises(SearchSpaceError, match="JSON"):
        parse_genotype("{not json")


def test_genotypes_are_hashable_values() -> None:
    a, b = NB201Genotype.from_string(BEST_CIFAR10), NB201Genotype.from_string(BEST_CIFAR10)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


# --------------------------------------------------------------------------------------------- decode


def test_decode_takes_the_argmax_excluding_none() -> None:
    scores = torch.zeros(6, 5)
    scores[:, 0] = 10.0  # 'none' largest everywhere: must never be picked
    for row in range(6):
        scores[row, 1 + row % 4] = 1.0
    genotype = decode({"normal": scores})
    assert genotype.ops == tuple(OPS[1 + row % 4] for row in range(6))


def test_decode_breaks_ties_to_the_lowest_op_index() -> None:
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.5]] * 3 + [[9.0, 0.1, 0.3, 0.3, 0.2]] * 3)
    genotype = decode({"normal": scores})
    assert genotype.ops == ("skip_connect",) * 3 + ("nor_conv_1x1",) * 3
    assert decode({"normal": scores}, edge_weights={"normal": torch.arange(1.0, 7.0)}) == genotype


def test_decode_rejects_bad_input() -> None:
    with pytest.raises(SearchSpaceError, match=r"\(5, 5\)"):
        decode({"normal": torch.zeros(5, 5)})
    with pytest.raises(SearchSpaceError, match="normal"):
        decode({})
    with pytest.raises(SearchSpaceError, match="reduce"):
        decode({"normal": torch.zeros(6, 5), "reduce": torch.zeros(6, 5)})
    with pytest.raises(SearchSpaceError, match="edge weights"):
        decode({"normal": torch.zeros(6, 5)}, edge_weights={"normal": torch.ones(5)})


# --------------------------------------------------------------------------------------------- supernet


def test_supernet_forward_backward_reaches_alphas_and_weights() -> None:
    torch.manual_seed(0)
    net = NB201Supernet(C=4, N=1)
    logits = net(_images())
    assert logits.shape == (2, 10)
    logits.logsumexp(dim=1).sum().backward()
    assert net.alphas["normal"].grad is not None and net.alphas["normal"].grad.abs().sum() > 0
    grads = [p.grad for p in net.weight_parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert net.arch_parameters() == [net.alphas["normal"]]


def test_supernet_uses_the_op_weights_argument() -> None:
    torch.manual_seed(0)
    net = NB201Supernet(C=4, N=2, num_classes=3)
    x = _images()
    default = net(x)
    assert torch.allclose(net(x, net.op_weights()), default)
    skip_only = torch.zeros(6, 5)
    skip_only[:, 1] = 1.0
    assert not torch.allclose(net(x, {"normal": skip_only}), default)
    # All weight on 'none': every cell outputs zero, so the logits cannot depend on the input.
    none_only = torch.zeros(6, 5)
    none_only[:, 0] = 1.0
    assert torch.allclose(net(x, {"normal": none_only}), net(_images(seed=1), {"normal": none_only}))


def test_supernet_op_weight_gradients_match_a_reference_mixed_op() -> None:
    """The fused cell must equal NB201's per-edge sum_o w_o * op_o(x_j), values and d/dw."""
    torch.manual_seed(0)
    C = 3
    cell = FusedSearchCell(C)
    x = torch.randn(2, C, 6, 6)
    weights = torch.softmax(torch.randn(6, 5), dim=-1).requires_grad_(True)
    fused = cell(x, _CellMixing(weights, C))
    reference = _reference_cell(cell, x, weights)
    assert torch.allclose(fused, reference, atol=1e-5)
    (grad_fused,) = torch.autograd.grad(fused.square().sum(), weights)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), weights)
    assert torch.allclose(grad_fused, grad_reference, atol=1e-4)
    assert torch.all(grad_fused[:, 0] == 0)  # 'none' contributes nothing


def test_op_weight_after_a_weightless_bn_equals_it_folded_into_bn() -> None:
    """The fused cell scales the batch-statistics BN's output by the op weight (so vmap runs one BN for every
    seed of a group) instead of passing it as BN's affine weight: the same values and gradients."""
    torch.manual_seed(0)
    cell = FusedSearchCell(3)
    x = torch.randn(4, 3, 6, 6)
    scale = torch.rand(9, requires_grad=True)
    after = cell._conv_bn(x, cell.conv3[0], scale, 1)
    folded = F.batch_norm(F.conv2d(x, cell.conv3[0], padding=1), None, None, weight=scale, training=True, eps=1e-5)
    torch.testing.assert_close(after, folded, rtol=1e-6, atol=1e-6)
    probe = torch.randn_like(after)  # not y.square(): BN makes its gradient to the conv weight zero, i.e. noise
    grads = [torch.autograd.grad((y * probe).sum(), [scale, cell.conv3[0]]) for y in (after, folded)]
    for a, b in zip(*grads):  # float32 sums in another order: within 1e-5 of the largest entry
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))


def _reference_cell(cell: FusedSearchCell, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    C = cell.C
    nodes = [x]
    for to_node in range(1, 4):
        total = torch.zeros_like(x)
        for src in range(to_node):
            row = EDGES.index((to_node, src))
            position = to_node - src - 1
            x_src = nodes[src]
            conv3 = cell.conv3[src][position * C : (position + 1) * C]
            conv1 = cell.conv1[src][position * C : (position + 1) * C]
            ops = [
                torch.zeros_like(x_src),
                x_src,
                F.batch_norm(F.conv2d(F.relu(x_src), conv1), None, None, training=True),
                F.batch_norm(F.conv2d(F.relu(x_src), conv3, padding=1), None, None, training=True),
                F.avg_pool2d(x_src, 3, 1, 1, count_include_pad=False),
            ]
            total = total + sum(w * op for w, op in zip(weights[row], ops, strict=True))
        nodes.append(total)
    return nodes[-1]


def test_supernet_accepts_channels_last_and_autocast() -> None:
    torch.manual_seed(0)
    net = NB201Supernet(C=4, N=1).to(memory_format=torch.channels_last)
    x = _images().to(memory_format=torch.channels_last)
    assert torch.allclose(net(x), net(_images()), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.float().sum().backward()
    assert net.alphas["normal"].grad is not None


def test_supernet_rejects_bad_sizes_and_op_weights() -> None:
    with pytest.raises(SearchSpaceError, match="C must"):
        build_supernet(C=0)
    with pytest.raises(SearchSpaceError, match="N must"):
        build_supernet(N=0)
    with pytest.raises(SearchSpaceError, match="width"):
        build_supernet(width=8)
    net = build_supernet(C=2, N=1)
    with pytest.raises(SearchSpaceError, match="op_weights"):
        net(_images(), {"normal": torch.ones(6, 4)})


# --------------------------------------------------------------------------------------------- eval network


def test_tiny_network_forward_and_parameter_count() -> None:
    genotype = NB201Genotype.from_string(BEST_CIFAR10)
    net = build_eval_network(genotype, C=4, N=1, num_classes=7)
    logits, aux = net(_images())
    assert logits.shape == (2, 7) and aux is None
    # NB201's published parameter range for CIFAR-10 is ~0.07M (no parametric op) to ~1.53M (all conv3x3).
    assert _count(TinyNetwork(genotype)) == 1_288_506
    assert _count(TinyNetwork(NB201Genotype(("nor_conv_3x3",) * 6))) == 1_531_546
    assert _count(TinyNetwork(NB201Genotype.from_string(ALL_SKIP))) == 73_306
    assert 1.0e6 < _count(TinyNetwork(genotype)) < 1.5e6


def test_tiny_network_handles_cells_with_zero_nodes() -> None:
    dead_output = NB201Genotype.from_string("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    logits, _ = TinyNetwork(dead_output, C=2, N=1)(_images())
    assert torch.isfinite(logits).all()
    with pytest.raises(SearchSpaceError, match="NB201Genotype"):
        TinyNetwork(BEST_CIFAR10)  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError, match="auxiliary"):
        build_eval_network(BEST_CIFAR10, auxiliary=True)


def hand_nb201_search_size(C: int, N: int, classes: int) -> int:
    """NB201's search network (TinyNetworkDARTS), derived by hand. Stem: conv3x3 3 -> C and an affine BN (2 per
    channel). A search cell on c channels: 6 edges of nor_conv_1x1 (c^2) + nor_conv_3x3 (9c^2); their BNs have no
    affine parameters, and their conv biases are left out (a batch-statistics BN cancels them); N cells each at
    C, 2C, 4C: 60 N (1 + 4 + 16) C^2. A ResNet reduction c -> 2c: conv3x3/2 (18c^2) and conv3x3 (36c^2), each with
    an affine BN (4c), plus a 1x1 shortcut (2c^2): 56c^2 + 8c, at c = C and 2C. Head: BN(4C) + Linear(4C)."""
    stem = 27 * C + 2 * C
    cells = 60 * N * 21 * C * C
    reductions = (56 * C * C + 8 * C) + (56 * 4 * C * C + 16 * C)
    return stem + cells + reductions + 2 * 4 * C + 4 * C * classes + classes


def test_search_network_size_matches_the_hand_derivation() -> None:
    assert hand_nb201_search_size(16, 5, 10) == 432 + 32 + 1_612_800 + 71_680 + 384 + 128 + 650 == 1_686_106
    for C, N, classes in ((16, 5, 10), (8, 5, 10), (8, 1, 10), (4, 1, 7)):
        net = get_space("nb201").build_supernet(C=C, N=N, num_classes=classes)
        assert sum(p.numel() for p in net.weight_parameters()) == hand_nb201_search_size(C, N, classes)


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------------------------- registry


def test_registered_space_fields() -> None:
    space = get_space("nb201")
    assert space.name == "nb201" and space.ops == OPS and space.cell_types == ("normal",)
    assert space.num_edges == 6 and space.alpha_shape == (6, 5)
    assert space.parameter_free_ops == frozenset({"none", "skip_connect", "avg_pool_3x3"})
    assert space.op_index("nor_conv_3x3") == 3
    assert isinstance(space.build_supernet(C=2, N=1), NB201Supernet)
    assert space.parse_genotype(BEST_CIFAR10) == NB201Genotype.from_string(BEST_CIFAR10)
    assert isinstance(space.build_eval_network(space.parse_genotype(BEST_CIFAR10), C=2, N=1), TinyNetwork)
    assert space.decode({"normal": torch.eye(6, 5)}).ops[1] == "skip_connect"
