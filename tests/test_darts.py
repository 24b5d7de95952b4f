"""DARTS space: topology helpers, genotype format, decoder, supernet, eval networks (tiny sizes, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from searchspaces.base import SearchSpaceError, get_space
from searchspaces.darts import DartsSupernet, MixedOp
from searchspaces.darts_eval import (
    EvalCell,
    NetworkCIFAR,
    NetworkImageNet,
    build_eval_network,
    count_parameters,
    drop_path,
)
from searchspaces.darts_genotype import (
    DARTS_V1,
    DARTS_V2,
    EDGES,
    PC_DARTS,
    PRIMITIVES,
    DartsGenotype,
    decode,
    edge_row,
    node_rows,
    parse_genotype,
)
from searchspaces.darts_ops import Identity, Zero

OP = {name: i for i, name in enumerate(PRIMITIVES)}


def tiny_input(size: int = 16, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------ topology
def test_edge_order_and_helpers():
    assert len(EDGES) == 14
    assert EDGES[:5] == ((0, 0), (0, 1), (1, 0), (1, 1), (1, 2))
    assert EDGES[-1] == (3, 4)
    assert [list(node_rows(n)) for n in range(4)] == [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13]]
    for row, (node, inp) in enumerate(EDGES):
        assert edge_row(node, inp) == row
    with pytest.raises(SearchSpaceError, match="not 3"):
        edge_row(1, 3)


def test_registered_space_fields():
    space = get_space("darts")
    assert space.name == "darts"
    assert space.ops == PRIMITIVES
    assert space.ops[0] == "none" and space.ops[-1] == "dil_conv_5x5" and len(space.ops) == 8
    assert space.cell_types == ("normal", "reduce")
    assert space.num_edges == 14 and space.alpha_shape == (14, 8)
    assert space.parameter_free_ops == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}
    assert space.build_supernet is DartsSupernet
    assert space.decode is decode and space.parse_genotype is parse_genotype
    assert space.genotype_from_json(DARTS_V2.to_json()) == DARTS_V2
    assert isinstance(space.build_eval_network(DARTS_V2, num_classes=100, C=8, layers=3), NetworkCIFAR)


# ------------------------------------------------------------------------------------------ genotype
def test_published_genotypes_and_canonical_order():
    # Published text lists the stronger edge first; the canonical form sorts each node's pairs by input.
    assert DARTS_V2.normal[:2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert DARTS_V2.normal[4:6] == (("skip_connect", 0), ("sep_conv_3x3", 1))
    assert DARTS_V1.normal[:2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    swapped = DartsGenotype(
        normal=list(reversed(DARTS_V2.normal[:2])) + list(DARTS_V2.normal[2:]),
        normal_concat=[5, 4, 3, 2],
        reduce=DARTS_V2.reduce,
        reduce_concat=range(2, 6),
    )
    assert swapped == DARTS_V2 and hash(swapped) == hash(DARTS_V2) and str(swapped) == str(DARTS_V2)
    assert len({DARTS_V1, DARTS_V2, PC_DARTS, swapped}) == 3
    with pytest.raises(AttributeError):
        DARTS_V2.normal = ()  # type: ignore[misc]


def test_edge_choices_of_darts_v2():
    s3, skip, dil3, mx = OP["sep_conv_3x3"], OP["skip_connect"], OP["dil_conv_3x3"], OP["max_pool_3x3"]
    assert DARTS_V2.edge_choices() == {
        "normal": {0: s3, 1: s3, 2: s3, 3: s3, 5: skip, 6: s3, 9: skip, 11: dil3},
        "reduce": {0: mx, 1: mx, 3: mx, 4: skip, 5: mx, 7: skip, 10: mx, 11: skip},
    }


@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2, PC_DARTS], ids=["v1", "v2", "pc"])
def test_round_trips(genotype):
    assert DartsGenotype.from_json(genotype.to_json()) == genotype
    assert parse_genotype(json.dumps(genotype.to_json())) == genotype
    assert parse_genotype(genotype.to_str()) == genotype
    assert parse_genotype(genotype.to_darts_repr()) == genotype
    assert parse_genotype(repr(genotype)) == genotype
    assert str(genotype) == genotype.to_str() and "\n" not in str(genotype)


def test_to_str_form_and_json_layout():
    assert DARTS_V2.to_str() == (
        "N:sep3~0,sep3~1|sep3~0,sep3~1|skip~0,sep3~1|skip~0,dil3~2;"
        "R:max3~0,max3~1|max3~1,skip~2|max3~0,skip~2|max3~1,skip~2"
    )
    data = DARTS_V2.to_json()
    assert data["space"] == "darts" and data["normal"][0] == ["sep_conv_3x3", 0]
    assert data["normal_concat"] == [2, 3, 4, 5]
    partial = DartsGenotype(DARTS_V2.normal, (4, 5), DARTS_V2.reduce, (2, 3, 4, 5))
    assert partial.to_str().startswith("N[4,5]:") and parse_genotype(partial.to_str()) == partial
    # full op names are accepted in the short form as well
    assert parse_genotype(DARTS_V2.to_str().replace("sep3", "sep_conv_3x3")) == DARTS_V2


def test_parse_published_darts_repr_with_range():
    text = (
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
        "('dil_conv_3x3', 2)], "
        "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
        "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
        "('max_pool_3x3', 1)], reduce_concat=range(2, 6))"
    )
    assert parse_genotype(text) == DARTS_V2


def _pairs_with(cell_pairs, k, pair):
    pairs = list(cell_pairs)
    pairs[k] = pair
    return pairs


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"normal": DARTS_V2.normal[:7]}, "7"),
        ({"normal": _pairs_with(DARTS_V2.normal, 2, ("conv_9x9", 0))}, "conv_9x9"),
        ({"normal": _pairs_with(DARTS_V2.normal, 2, ("none", 0))}, "none"),
        ({"reduce": _pairs_with(DARTS_V2.reduce, 3, ("max_pool_3x3", 4))}, "input 4"),
        ({"reduce": _pairs_with(DARTS_V2.reduce, 0, ("max_pool_3x3", -1))}, "input -1"),
        ({"normal": _pairs_with(DARTS_V2.normal, 1, ("sep_conv_3x3", 0))}, "input 0 twice"),
        ({"normal": _pairs_with(DARTS_V2.normal, 0, ("sep_conv_3x3", 1.0))}, "1.0"),
        ({"normal_concat": (2, 3, 6)}, "6"),
        ({"reduce_concat": (1, 2, 3)}, "entry 1"),
        ({"reduce_concat": (2, 2)}, "[2, 2]"),
        ({"normal_concat": ()}, "[]"),
    ],
)
def test_invalid_genotypes_name_the_bad_value(kwargs, bad):
    fields = {
        "normal": DARTS_V2.normal,
        "normal_concat": DARTS_V2.normal_concat,
        "reduce": DARTS_V2.reduce,
        "reduce_concat": DARTS_V2.reduce_concat,
    }
    with pytest.raises(SearchSpaceError) as err:
        DartsGenotype(**{**fields, **kwargs})
    assert bad in str(err.value)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("", "''"),
        ("N:sep3~0,sep3~1", "reduce"),
        ("N:sep3~0,sep3~1|sep3~0|skip~0,sep3~1|skip~0,dil3~2;R:max3~0,max3~1", "sep3~0"),
        (DARTS_V2.to_str().replace("dil3~2", "dil7~2"), "dil7~2"),
        (DARTS_V2.to_str().replace("dil3~2", "dil3~x"), "dil3~x"),
        (DARTS_V2.to_str().replace("dil3~2", "dil3~9"), "input 9"),
        ("X:sep3~0", "X:sep3~0"),
        ("Genotype(normal=[('sep_conv_3x3', 0)", "Genotype(normal"),
        ("Genotype(normal=__import__('os').getcwd(), normal_concat=[2], reduce=[], reduce_concat=[2])", "os"),
        ("Genotype(normal=[], colour='red')", "colour"),
        ('{"space": "nb201", "normal": []}', "nb201"),
        ('{"normal": [], "normal_concat": [2]}', "reduce"),
        ('{"normal": 1, "bogus": 2}', "bogus"),
        ('{"normal": ', "JSON"),
    ],
)
def test_parse_errors_name_the_bad_value(text, bad):
    with pytest.raises(SearchSpaceError) as err:
        parse_genotype(text)
    assert bad in str(err.value)


def test_from_json_and_parse_reject_non_text():
    with pytest.raises(SearchSpaceError, match="42"):
        DartsGenotype.from_json(42)  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError, match="bytes"):
        parse_genotype(b"N:")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ decode
def _scores(fill: float = 0.0) -> dict[str, torch.Tensor]:
    return {cell: torch.full((14, 8), fill) for cell in ("normal", "reduce")}


def test_decode_hand_made_scores():
    scores = _scores()
    n, r = scores["normal"], scores["reduce"]
    # node 0: both edges; node 1: inputs 0 and 2; node 2: inputs 1 and 3; node 3: inputs 2 and 4
    for row, op, value in [
        (0, "sep_conv_3x3", 0.9), (1, "sep_conv_5x5", 0.8),
        (2, "dil_conv_3x3", 0.7), (3, "skip_connect", 0.1), (4, "avg_pool_3x3", 0.6),
        (5, "skip_connect", 0.2), (6, "dil_conv_5x5", 0.5), (8, "max_pool_3x3", 0.4),
        (11, "sep_conv_3x3", 0.3), (13, "skip_connect", 0.35), (9, "sep_conv_5x5", 0.05),
    ]:  # fmt: skip
        n[row, OP[op]] = value
    r[:, OP["max_pool_3x3"]] = 0.5
    r[torch.tensor([1, 4, 8, 13]), OP["avg_pool_3x3"]] = 0.9
    expected = DartsGenotype(
        normal=[("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_3x3", 0), ("avg_pool_3x3", 2),
                ("dil_conv_5x5", 1), ("max_pool_3x3", 3), ("sep_conv_3x3", 2), ("skip_connect", 4)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("avg_pool_3x3", 2),
                ("max_pool_3x3", 0), ("avg_pool_3x3", 3), ("max_pool_3x3", 0), ("avg_pool_3x3", 4)],
        reduce_concat=[2, 3, 4, 5],
    )  # fmt: skip
    assert decode(scores) == expected


def test_decode_ignores_none_even_when_it_dominates():
    scores = _scores()
    for cell, table in scores.items():
        table[:, OP["none"]] = 100.0
        table[:, OP["dil_conv_5x5"]] = torch.linspace(0.1, 1.0, 14) if cell == "normal" else 0.0
    genotype = decode(scores)
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)
    # normal: dil_conv_5x5 grows with the row, so each node keeps its last two inputs
    assert genotype.normal == tuple(("dil_conv_5x5", inp) for node in range(4) for inp in (node, node + 1))
    # reduce: all non-'none' scores tie at 0 -> lowest edges (inputs 0, 1) and lowest op (max_pool_3x3)
    assert genotype.reduce == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4


def test_decode_ties_and_float64_resolution():
    assert decode(_scores()) == decode(_scores(3.0))
    assert decode(_scores()).normal == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
    scores = {cell: torch.zeros(14, 8, dtype=torch.float64) for cell in ("normal", "reduce")}
    scores["normal"][2:5, OP["skip_connect"]] = 1.0
    # a margin float32 would round away: row 3 (input 1) must win on sep_conv_3x3, then rows 2/4 tie
    scores["normal"][3, OP["sep_conv_3x3"]] = 1.0 + 1e-12
    genotype = decode(scores)
    assert genotype.normal[2:4] == (("skip_connect", 0), ("sep_conv_3x3", 1))


def test_decode_edge_weights_change_the_selected_edges():
    scores = _scores()
    for table in scores.values():
        table[:, OP["sep_conv_3x3"]] = 1.0
    assert decode(scores).normal[2:4] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    edge_weights = {cell: torch.ones(14) for cell in ("normal", "reduce")}
    edge_weights["normal"][torch.tensor([2, 3, 4])] = torch.tensor([0.1, 0.2, 0.7])  # node 1 prefers 2, 1
    genotype = decode(scores, edge_weights)
    assert genotype.normal[2:4] == (("sep_conv_3x3", 1), ("sep_conv_3x3", 2))
    assert genotype.reduce == decode(scores).reduce


def test_decode_inverts_edge_choices():
    for genotype in (DARTS_V1, DARTS_V2, PC_DARTS):
        scores = _scores()
        for cell, choices in genotype.edge_choices().items():
            for row, op in choices.items():
                scores[cell][row, op] = 1.0
        assert decode(scores) == genotype


@pytest.mark.parametrize(
    ("scores", "edge_weights", "bad"),
    [
        ({"normal": torch.zeros(14, 8)}, None, "'reduce'"),
        ({**_scores(), "extra": torch.zeros(14, 8)}, None, "'extra'"),
        ({"normal": torch.zeros(14, 7), "reduce": torch.zeros(14, 8)}, None, "(14, 7)"),
        ({"normal": torch.zeros(8, 14), "reduce": torch.zeros(14, 8)}, None, "(8, 14)"),
        ({"normal": torch.full((14, 8), float("nan")), "reduce": torch.zeros(14, 8)}, None, "non-finite"),
        ({"normal": "abc", "reduce": torch.zeros(14, 8)}, None, "'normal'"),
        (_scores(), {"normal": torch.ones(13), "reduce": torch.ones(14)}, "(13,)"),
        (_scores(), {"normal": torch.ones(14)}, "'reduce'"),
    ],
)
def test_decode_rejects_bad_input(scores, edge_weights, bad):
    with pytest.raises(SearchSpaceError) as err:
        decode(scores, edge_weights)
    assert bad in str(err.value)


# ------------------------------------------------------------------------------------------ supernet
@pytest.fixture(scope="module")
def supernet() -> DartsSupernet:
    torch.manual_seed(0)
    return DartsSupernet(C=4, layers=3)


def test_supernet_structure(supernet):
    assert set(supernet.alphas) == {"normal", "reduce"}
    assert all(a.shape == (14, 8) for a in supernet.alphas.values())
    assert [cell.reduction for cell in supernet.cells] == [False, True, True]
    assert not any(isinstance(m, Zero) for m in supernet.modules()), "'none' must not be computed"
    mixed = [m for m in supernet.modules() if isinstance(m, MixedOp)]
    assert len(mixed) == 3 * 14 and all(len(m.ops) == 7 for m in mixed)
    cell_bns = [m for m in supernet.cells.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bns and not any(bn.affine for bn in cell_bns)
    assert len(supernet.arch_parameters()) == 2
    assert len(supernet.weight_parameters()) == len(list(supernet.parameters())) - 2
    assert supernet.edge_weights() == {}


def test_supernet_forward_backward(supernet):
    supernet.train()
    supernet.zero_grad()
    logits = supernet(tiny_input())
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    for alpha in supernet.alphas.values():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    missing = [n for n, p in supernet.named_parameters() if p.grad is None]
    assert not missing


def test_supernet_op_weights_argument(supernet):
    supernet.eval()
    x = tiny_input()
    with torch.no_grad():
        default = supernet(x)
        explicit = supernet(x, supernet.op_weights())
        one_hot = {cell: torch.eye(8)[[OP["sep_conv_3x3"]] * 14] for cell in ("normal", "reduce")}
        other = supernet(x, one_hot)
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, other)


def test_supernet_gradient_wrt_beta(supernet):
    """The search loop reads dL/dbeta off a leaf beta; 'none' (never computed) gets exactly zero."""
    supernet.train()
    betas = {cell: w.detach().requires_grad_() for cell, w in supernet.op_weights().items()}
    supernet(tiny_input(), betas).sum().backward()
    for beta in betas.values():
        assert beta.grad.shape == (14, 8)
        assert torch.all(beta.grad[:, OP["none"]] == 0)
        assert torch.all(beta.grad[:, 1:].abs().sum(dim=1) > 0)


def test_shared_relu_gives_what_each_op_alone_gives(supernet):
    """The cells compute relu(state) once for every op that opens with a ReLU; the supernet's output must be
    what the ops give when each runs its own ReLU (a MixedOp called without x_relu per op), bit for bit."""
    from searchspaces.darts_ops import DilConv, FactorizedReduce, SepConv

    x = torch.randn(2, 4, 8, 8)
    for op in (SepConv(4, 4, 3, 1, 1), DilConv(4, 4, 5, 2, 4, 2), FactorizedReduce(4, 4)):
        assert torch.equal(op(torch.relu(x), preactivated=True), op(x))

    def each_op_alone(edge, h, weights, _x_relu=None):
        return torch.tensordot(weights, torch.stack([op(h) for op in edge.ops]), dims=1)

    supernet.eval()
    with torch.no_grad():
        shared = supernet(tiny_input())
        for edge in (m for m in supernet.modules() if isinstance(m, MixedOp)):
            edge.forward = each_op_alone.__get__(edge)
        try:
            alone = supernet(tiny_input())
        finally:
            for edge in (m for m in supernet.modules() if isinstance(m, MixedOp)):
                del edge.forward
    assert torch.equal(shared, alone)


def test_supernet_rejects_bad_weights(supernet):
    with pytest.raises(SearchSpaceError, match=r"\(14, 7\)"):
        supernet(tiny_input(), {"normal": torch.zeros(14, 7), "reduce": torch.zeros(14, 8)})
    with pytest.raises(SearchSpaceError, match="'reduce'"):
        supernet(tiny_input(), {"normal": torch.zeros(14, 8)})
    with pytest.raises(SearchSpaceError, match="layers"):
        DartsSupernet(C=4, layers=0)
    with pytest.raises(SearchSpaceError, match="multiplier"):
        DartsSupernet(C=4, layers=3, multiplier=5)


def bf16_search_step(net: nn.Module, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, DartsGenotype]:
    """One first-order search step with the forwards under CPU bf16 autocast (what ``amp: bf16`` does on a GPU):
    the architecture step on a validation batch, then the weight step on a training batch. Returns both
    losses and the genotype the step's operation strength (|dL/d alpha|) selects. Built on the supernet alone,
    so it holds whatever shape the search loop takes."""
    net.train()
    alpha_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999))
    weight_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
    x_val, x_train = tiny_input(size), tiny_input(size).flip(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x_val)
    assert logits.dtype == torch.bfloat16  # the ops really ran in bf16
    val_loss = nn.functional.cross_entropy(logits.float(), torch.tensor([1, 7]))
    net.zero_grad()
    val_loss.backward()
    strength = {cell: alpha.grad.detach().abs() for cell, alpha in net.alphas.items()}
    assert all(torch.isfinite(g).all() and g.sum() > 0 for g in strength.values())
    alpha_opt.step()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_loss = nn.functional.cross_entropy(net(x_train).float(), torch.tensor([3, 4]))
    net.zero_grad()
    train_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.weight_parameters())
    weight_opt.step()
    edge_weights = {cell: w.detach() for cell, w in net.edge_weights().items()} or None
    return val_loss.detach(), train_loss.detach(), decode(strength, edge_weights)


def test_one_search_step_under_bf16_autocast():
    """The mixed ops return bf16 under autocast while the mixing weights stay fp32 (this crashed: f288f2c)."""
    torch.manual_seed(0)
    val_loss, train_loss, genotype = bf16_search_step(DartsSupernet(C=4, layers=3))
    assert torch.isfinite(val_loss) and torch.isfinite(train_loss)
    assert isinstance(genotype, DartsGenotype) and parse_genotype(genotype.to_str()) == genotype


def test_search_network_size():
    net = DartsSupernet()  # paper setting: C=16, 8 cells
    assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618  # DARTS' search log: 1.93MB


# ---------------------------------------------------------------------- search-network sizes, by hand
# Derived from the reference design (quark0/darts model_search.py; PC-DARTS model_search.py and, for the ImageNet
# stem, model_search_imagenet.py), not from this code. Cell BNs have no affine parameters, the stem BNs do (2 per
# channel). One mixed edge on c channels ('none' skipped, pools add nothing):
#   sep_conv_3x3 2 * (9c + c^2) + sep_conv_5x5 2 * (25c + c^2) + dil_conv_3x3 (9c + c^2) + dil_conv_5x5 (25c + c^2)
#   = 102c + 6c^2, and a stride-2 edge adds skip_connect's FactorizedReduce, c^2.
# A cell has 14 edges, 8 of them stride 2 in a reduction cell; PC-DARTS runs its ops on c = C / K channels.
# Preprocessing is (C_pp + C_p) * C: a 1x1 ReLUConvBN and a FactorizedReduce (two 1x1 convs to C/2) weigh the
# same, so cell 0 seeing a reduced state (ImageNet stem) changes shapes, not the count.
def hand_cell(C: int, reduce: bool, k: int = 1) -> int:
    c = C // k
    return 14 * (102 * c + 6 * c * c) + (8 * c * c if reduce else 0)


def hand_stem(C_stem: int, stem: str) -> int:
    if stem == "cifar":  # conv3x3 3 -> C_stem, BN
        return 3 * C_stem * 9 + 2 * C_stem
    half = C_stem // 2  # conv3x3/2 3 -> C_stem/2, BN; conv3x3/2 -> C_stem, BN; conv3x3/2 C_stem -> C_stem, BN
    return 3 * half * 9 + 2 * half + half * C_stem * 9 + 2 * C_stem + C_stem * C_stem * 9 + 2 * C_stem


def hand_preset_size(stem: str, classes: int, k: int = 1) -> int:
    """8 cells, C=16 (stem 48), reductions at 8 // 3 = 2 and 16 // 3 = 5, head 256 -> classes."""
    cells = [(16, False), (16, False), (32, True), (32, False), (32, False), (64, True), (64, False), (64, False)]
    preprocess = [(48 + 48) * 16, (48 + 64) * 16, (64 + 64) * 32, (64 + 128) * 32]
    preprocess += [(128 + 128) * 32, (128 + 128) * 64, (128 + 256) * 64, (256 + 256) * 64]
    return hand_stem(48, stem) + sum(hand_cell(C, r, k) for C, r in cells) + sum(preprocess) + 256 * classes + classes


def hand_small_size(stem: str, classes: int, k: int = 1) -> int:
    """3 cells, C=8 (stem 24), reductions at 1 and 2, head 128 -> classes."""
    cells = [(8, False), (16, True), (32, True)]
    preprocess = [(24 + 24) * 8, (24 + 32) * 16, (32 + 64) * 32]
    return hand_stem(24, stem) + sum(hand_cell(C, r, k) for C, r in cells) + sum(preprocess) + 128 * classes + classes


def hand_darts_search_size(C: int, layers: int, stem: str, classes: int, k: int = 1) -> int:
    """Any search network of the design: stem 3C; reductions at layers // 3 and 2 * layers // 3, each doubling
    the cell width; a cell's preprocessing maps its two inputs to C_cell, its output is 4 * C_cell."""
    C_pp = C_p = 3 * C
    size, width = hand_stem(3 * C, stem), C
    for i in range(layers):
        reduce = i in (layers // 3, 2 * layers // 3)
        width *= 2 if reduce else 1
        size += hand_cell(width, reduce, k) + (C_pp + C_p) * width
        C_pp, C_p = C_p, 4 * width
    return size + C_p * classes + classes


def weight_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.weight_parameters())


def test_search_network_sizes_match_the_hand_derivation():
    # stems: CIFAR 1,296 + 96 = 1,392; ImageNet 648 + 48 + 10,368 + 96 + 20,736 + 96 = 31,992
    assert hand_stem(48, "cifar") == 1_392 and hand_stem(48, "imagenet") == 31_992
    assert hand_preset_size("cifar", 10) == 1_930_618  # DARTS' own search log: "param size = 1.93MB"
    assert weight_count(DartsSupernet()) == hand_preset_size("cifar", 10)
    # ImageNet search network: 31,992 stem + 1,926,656 cells + 257,000 head
    assert hand_preset_size("imagenet", 1000) == 31_992 + 1_926_656 + 257_000 == 2_215_648
    assert weight_count(DartsSupernet(num_classes=1000, stem="imagenet")) == 2_215_648
    for stem in ("cifar", "imagenet"):
        assert weight_count(DartsSupernet(C=8, layers=3, num_classes=7, stem=stem)) == hand_small_size(stem, 7)
        # the general form (what tests/test_presets.py checks every preset against) gives both written-out sizes
        for k in (1, 2, 4):
            assert hand_darts_search_size(16, 8, stem, 10, k) == hand_preset_size(stem, 10, k)
            assert hand_darts_search_size(8, 3, stem, 7, k) == hand_small_size(stem, 7, k)
        assert weight_count(DartsSupernet(C=8, layers=5, num_classes=3, stem=stem)) == hand_darts_search_size(
            8, 5, stem, 3
        )


def test_darts_imagenet_preset_builds_the_hand_derived_network():
    """The preset's exact network through the registry (no forward)."""
    from ostr_ray.core.config import load_preset

    values = load_preset("darts-imagenet")
    assert values["space_kwargs"] == {"C": 16, "layers": 8, "stem": "imagenet"}
    net = get_space(values["space"]).build_supernet(num_classes=1000, **values["space_kwargs"])
    assert weight_count(net) == hand_preset_size("imagenet", 1000) == 2_215_648


def _shapes(net: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of the stem(s) and every cell of one forward."""
    shapes: dict[str, tuple[int, ...]] = {}
    named = [(n, m) for n, m in net.named_children() if n.startswith("stem")]
    named += [(f"cell{i}", cell) for i, cell in enumerate(net.cells)]

    def record(name: str):
        def hook(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            shapes[name] = tuple(out.shape)

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in named]
    try:
        shapes["logits"] = tuple(net(x).shape)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def test_stems_shapes_and_first_cell_inputs():
    from searchspaces.darts_ops import FactorizedReduce, ReLUConvBN

    torch.manual_seed(0)
    cifar = DartsSupernet(C=8, layers=3, num_classes=5)
    assert _shapes(cifar, tiny_input(32)) == {
        "stem": (2, 24, 32, 32),
        "cell0": (2, 32, 32, 32),
        "cell1": (2, 64, 16, 16),
        "cell2": (2, 128, 8, 8),
        "logits": (2, 5),
    }
    assert isinstance(cifar.cells[0].preprocess0, ReLUConvBN)
    imagenet = DartsSupernet(C=8, layers=3, num_classes=5, stem="imagenet")
    # 224 -> 112 -> 56 (stem0) -> 28 (stem1); cell 0 aligns stem0's 56x56 output with a FactorizedReduce
    assert _shapes(imagenet, tiny_input(224)) == {
        "stem0": (2, 24, 56, 56),
        "stem1": (2, 24, 28, 28),
        "cell0": (2, 32, 28, 28),
        "cell1": (2, 64, 14, 14),
        "cell2": (2, 128, 7, 7),
        "logits": (2, 5),
    }
    assert isinstance(imagenet.cells[0].preprocess0, FactorizedReduce)
    assert [cell.reduction for cell in imagenet.cells] == [False, True, True]
    with pytest.raises(SearchSpaceError, match="stem must be one of cifar, imagenet, got 'mnist'"):
        DartsSupernet(C=8, layers=3, stem="mnist")


def test_imagenet_supernet_forward_backward_at_224():
    torch.manual_seed(0)
    net = DartsSupernet(C=8, layers=3, num_classes=1000, stem="imagenet").train()
    nn.functional.cross_entropy(net(tiny_input(224)), torch.tensor([3, 999])).backward()
    assert not [n for n, p in net.named_parameters() if p.grad is None]
    assert all(alpha.grad.abs().sum() > 0 for alpha in net.alphas.values())
    assert all(p.grad.abs().sum() > 0 for p in [*net.stem0.parameters(), *net.stem1.parameters()])


# ------------------------------------------------------------------------------------------ eval nets
def test_published_parameter_counts():
    cifar = NetworkCIFAR(DARTS_V2, C=36, layers=20, num_classes=10, auxiliary=True)
    imagenet = NetworkImageNet(DARTS_V2, C=48, layers=14, num_classes=1000, auxiliary=True)
    n_cifar, n_imagenet = count_parameters(cifar), count_parameters(imagenet)
    assert n_cifar == 3_349_342 and 3.2e6 <= n_cifar <= 3.4e6  # DARTS paper: 3.3M
    assert n_imagenet == 4_718_752 and 4.6e6 <= n_imagenet <= 4.8e6  # DARTS paper: 4.7M
    assert count_parameters(cifar, include_auxiliary=True) > n_cifar
    assert count_parameters(NetworkCIFAR(DARTS_V2, auxiliary=False)) == n_cifar


def test_cifar_eval_network_forward():
    torch.manual_seed(0)
    net = build_eval_network(DARTS_V2, dataset_kind="cifar", C=8, layers=5, drop_path_prob=0.2)
    x = tiny_input(32)  # the CIFAR aux head expects 8x8 after the second reduction
    net.train()
    logits, aux = net(x)
    assert logits.shape == (2, 10) and aux is not None and aux.shape == (2, 10)
    (logits.sum() + 0.4 * aux.sum()).backward()
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
    assert logits.shape == (2, 10) and aux is None


def test_imagenet_eval_network_forward():
    torch.manual_seed(0)
    net = build_eval_network(PC_DARTS, num_classes=7, dataset_kind="imagenet", C=8, layers=3)
    assert isinstance(net, NetworkImageNet)
    net.train()
    logits, aux = net(tiny_input(224))  # the ImageNet aux head expects 7x7 after the second reduction
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    net.eval()
    with torch.no_grad():
        logits, aux = net(tiny_input(64))
    assert logits.shape == (2, 7) and aux is None


def test_drop_path():
    x = torch.ones(1000, 2, 1, 1)
    assert drop_path(x, 0.0) is x
    torch.manual_seed(0)
    out = drop_path(x, 0.5)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert 400 < int((out[:, 0, 0, 0] == 0).sum()) < 600
    assert torch.equal(out[:, 0], out[:, 1]), "whole samples are dropped, not single channels"


def test_drop_path_only_in_training_and_not_on_identity():
    cell = EvalCell(DARTS_V2, 8, 8, 4, reduction=False, reduction_prev=False)
    assert cell.droppable == tuple(not isinstance(op, Identity) for op in cell.ops)
    assert cell.droppable.count(False) == 2  # DARTS_V2's two stride-1 skip_connects
    torch.manual_seed(0)
    net = NetworkCIFAR(DARTS_V2, C=4, layers=3, auxiliary=False, drop_path_prob=0.0)
    x = tiny_input()
    net.train()
    torch.testing.assert_close(net(x)[0], net(x)[0])
    net.drop_path_prob = 0.5
    assert not torch.allclose(net(x)[0], net(x)[0])
    net.eval()
    torch.testing.assert_close(net(x)[0], net(x)[0])


def test_build_eval_network_rejects_bad_arguments():
    with pytest.raises(SearchSpaceError, match="'mnist'"):
        build_eval_network(DARTS_V2, dataset_kind="mnist")
    with pytest.raises(SearchSpaceError, match="'width'"):
        build_eval_network(DARTS_V2, width=3)
    with pytest.raises(SearchSpaceError, match="str"):
        build_eval_network(DARTS_V2.to_str(), C=4, layers=3)  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError, match="layers"):
        build_eval_network(DARTS_V2, layers=0)
