"""The DARTS genotype (Liu et al., ICLR 2019): its text forms, the named cells of the papers, and the decoder.

Cells have two inputs, four intermediate nodes and 14 edges (canonical order: :mod:`searchspaces.darts_ops`),
each edge a mix of the 8 :data:`PRIMITIVES`; the discrete architecture keeps two incoming edges per node,
one non-'none' op each, and concatenates the four nodes. Shared by the DARTS and PC-DARTS spaces and by the
evaluation networks (:mod:`searchspaces.darts_eval`).
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from searchspaces.base import Scores, SearchSpaceError
from searchspaces.darts_ops import (
    CELL_TYPES,
    EDGES,
    NONE_INDEX,
    NUM_EDGES,
    NUM_NODES,
    PRIMITIVES,
    edge_row,
    node_rows,
)

__all__ = [
    "CELL_TYPES",
    "DARTS_V1",
    "DARTS_V2",
    "DEFAULT_CONCAT",
    "EDGES",
    "EDGE_LABELS",
    "NUM_EDGES",
    "NUM_NODES",
    "PARAMETER_FREE_OPS",
    "PC_DARTS",
    "PRIMITIVES",
    "SHORT_OPS",
    "DartsGenotype",
    "decode",
    "edge_row",
    "node_rows",
    "parse_genotype",
]

DEFAULT_CONCAT: tuple[int, ...] = tuple(range(2, 2 + NUM_NODES))
PARAMETER_FREE_OPS = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})
"""The ops DARTS' collapse analyses call parameter-free (skip_connect counts although it becomes a
FactorizedReduce on the stride-2 edges of reduction cells)."""

SHORT_OPS = {
    "none": "none",
    "max_pool_3x3": "max3",
    "avg_pool_3x3": "avg3",
    "skip_connect": "skip",
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "dil_conv_3x3": "dil3",
    "dil_conv_5x5": "dil5",
}
_KEPT_SHORT = {op: short for op, short in SHORT_OPS.items() if op != "none"}
"""Short names of the ops a genotype may keep (every op but 'none')."""
_OP_BY_NAME = {**{short: op for op, short in _KEPT_SHORT.items()}, **{op: op for op in _KEPT_SHORT}}
_CELL_LETTER = {"normal": "N", "reduce": "R"}
EDGE_LABELS = tuple(
    f"n{node}<-" + ("c[k-2]", "c[k-1]")[inp] if inp < 2 else f"n{node}<-n{inp - 2}" for node, inp in EDGES
)
"""Edge row labels: intermediate node ``n<i>`` reading ``c[k-2]``, ``c[k-1]`` or an earlier node."""

Pair = tuple[str, int]


# ------------------------------------------------------------------------------------------- genotype
def as_index(value: Any, what: str) -> int:
    """An int from an int-like value (numpy ints included); bools and floats are rejected, not truncated."""
    if isinstance(value, bool):
        raise SearchSpaceError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise SearchSpaceError(f"{what} must be an integer, got {value!r}") from None


def _checked_cell(cell: str, pairs: Any, concat: Any) -> tuple[tuple[Pair, ...], tuple[int, ...]]:
    """Validate one cell and bring it to canonical form: within a node the two pairs sorted by input, the
    concat sorted. Canonical form makes ``==``, ``hash`` and ``to_str`` agree exactly when two genotypes
    build the same network (DARTS lists the stronger edge first, which does not change the network)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise SearchSpaceError(f"{cell} must be a sequence of (op, input) pairs, got {pairs!r}")
    if len(pairs) != 2 * NUM_NODES:
        raise SearchSpaceError(
            f"{cell} has {len(pairs)} (op, input) pairs; a DARTS cell needs {2 * NUM_NODES} (2 per node)"
        )
    checked: list[Pair] = []
    for k, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise SearchSpaceError(f"{cell} pair {k} must be (op, input), got {pair!r}")
        op, inp = pair
        node = k // 2
        if not isinstance(op, str) or op not in _KEPT_SHORT:
            hint = "'none' is never kept in a genotype" if op == "none" else f"ops are {', '.join(_KEPT_SHORT)}"
            raise SearchSpaceError(f"unknown op {op!r} in {cell} pair {k}; {hint}")
        inp = as_index(inp, f"input of {cell} pair {k}")
        if not 0 <= inp <= node + 1:
            raise SearchSpaceError(
                f"input {inp} out of range in {cell} pair {k}: node {node} may take inputs 0..{node + 1}"
            )
        checked.append((op, inp))
    nodes = [sorted(checked[2 * n : 2 * n + 2], key=lambda p: p[1]) for n in range(NUM_NODES)]
    for n, (a, b) in enumerate(nodes):
        if a[1] == b[1]:
            raise SearchSpaceError(f"node {n} of {cell} takes input {a[1]} twice; each edge holds one op")
    if isinstance(concat, (str, bytes)) or not isinstance(concat, (Sequence, range)):
        raise SearchSpaceError(f"{cell}_concat must be a sequence of node states, got {concat!r}")
    concat_ids = [as_index(c, f"{cell}_concat entry") for c in concat]
    for c in concat_ids:
        if c not in DEFAULT_CONCAT:
            raise SearchSpaceError(
                f"{cell}_concat entry {c} names no intermediate node; valid entries are "
                f"{DEFAULT_CONCAT[0]}..{DEFAULT_CONCAT[-1]}"
            )
    if not concat_ids or len(set(concat_ids)) != len(concat_ids):
        raise SearchSpaceError(f"{cell}_concat must name distinct nodes, got {list(concat_ids)!r}")
    return tuple(p for node in nodes for p in node), tuple(sorted(concat_ids))


@dataclass(frozen=True)
class DartsGenotype:
    """A discrete DARTS architecture in the DARTS format: per cell 8 ``(op, input_state)`` pairs, two per
    intermediate node (node ``i`` may read states ``0..i+1``), plus the node states concatenated as output.

    Construction validates and canonicalises (see :func:`_checked_cell`), so ``DartsGenotype`` values are
    hashable and equal exactly when they describe the same network. Shared by "darts" and "pcdarts".
    """

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for cell in CELL_TYPES:
            pairs, concat = _checked_cell(cell, getattr(self, cell), getattr(self, f"{cell}_concat"))
            object.__setattr__(self, cell, pairs)
            object.__setattr__(self, f"{cell}_concat", concat)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"space": "darts"}
        for cell in CELL_TYPES:
            out[cell] = [[op, inp] for op, inp in getattr(self, cell)]
            out[f"{cell}_concat"] = list(getattr(self, f"{cell}_concat"))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DartsGenotype:
        """Inverse of :meth:`to_json`; ``space`` may be "darts", "pcdarts" or absent."""
        if not isinstance(data, Mapping):
            raise SearchSpaceError(f"a DARTS genotype JSON must be an object, got {data!r}")
        if data.get("space", "darts") not in ("darts", "pcdarts"):
            raise SearchSpaceError(f"genotype JSON is for space {data['space']!r}, not 'darts'/'pcdarts'")
        fields = ("normal", "normal_concat", "reduce", "reduce_concat")
        unknown = sorted(set(data) - set(fields) - {"space"})
        if unknown:
            raise SearchSpaceError(f"unexpected key(s) {', '.join(map(repr, unknown))} in DARTS genotype JSON")
        missing = [f for f in fields if f not in data]
        if missing:
            raise SearchSpaceError(f"DARTS genotype JSON lacks key(s) {', '.join(map(repr, missing))}")
        return cls(**{f: data[f] for f in fields})

    def to_str(self) -> str:
        """One line such as ``N:sep3~0,sep3~1|...;R:max3~0,max3~1|...`` (op~input, nodes split by ``|``);
        a non-default concat is written as ``N[2,3,4]:``. Parsed back by :func:`parse_genotype`."""
        parts = []
        for cell in CELL_TYPES:
            pairs = getattr(self, cell)
            nodes = "|".join(
                ",".join(f"{_KEPT_SHORT[op]}~{inp}" for op, inp in pairs[2 * n : 2 * n + 2]) for n in range(NUM_NODES)
            )
            concat = getattr(self, f"{cell}_concat")
            suffix = "" if concat == DEFAULT_CONCAT else "[" + ",".join(map(str, concat)) + "]"
            parts.append(f"{_CELL_LETTER[cell]}{suffix}:{nodes}")
        return ";".join(parts)

    __str__ = to_str

    def to_darts_repr(self) -> str:
        """The text DARTS' namedtuple prints, ``Genotype(normal=[('sep_conv_3x3', 0), ...], ...)``."""
        return (
            f"Genotype(normal={list(self.normal)!r}, normal_concat={list(self.normal_concat)!r}, "
            f"reduce={list(self.reduce)!r}, reduce_concat={list(self.reduce_concat)!r})"
        )

    def __repr__(self) -> str:
        return "Darts" + self.to_darts_repr()

    def edge_choices(self) -> dict[str, dict[int, int]]:
        """cell type -> {alpha row: op index} for the 8 kept edges of each cell."""
        return {
            cell: {edge_row(k // 2, inp): PRIMITIVES.index(op) for k, (op, inp) in enumerate(getattr(self, cell))}
            for cell in CELL_TYPES
        }


DARTS_V1 = DartsGenotype(
    normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
    reduce_concat=(2, 3, 4, 5),
)  # fmt: skip
"""DARTS (first order), from quark0/darts ``genotypes.py``."""

DARTS_V2 = DartsGenotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)  # fmt: skip
"""DARTS (second order), the paper's CIFAR-10 cell (3.3M params, 2.76% error)."""

PC_DARTS = DartsGenotype(
    normal=(("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)),
    reduce_concat=(2, 3, 4, 5),
)  # fmt: skip
"""PC-DARTS CIFAR-10 cell, from yuhuixu1993/PC-DARTS ``genotypes.py`` (``PC_DARTS_cifar``)."""


# ------------------------------------------------------------------------------------------- parsing
_STR_CELL = re.compile(r"^([NR])(?:\[([0-9,\s]*)\])?:(.*)$")


def _parse_short(text: str) -> DartsGenotype:
    fields: dict[str, Any] = {}
    letters = {letter: cell for cell, letter in _CELL_LETTER.items()}
    for part in text.split(";"):
        m = _STR_CELL.match(part.strip())
        if m is None:
            raise SearchSpaceError(f"cannot parse genotype part {part!r}; expected e.g. 'N:sep3~0,sep3~1|...'")
        cell = letters[m.group(1)]
        if cell in fields:
            raise SearchSpaceError(f"genotype text names the {cell} cell twice: {text!r}")
        pairs: list[tuple[str, int]] = []
        for node_text in m.group(3).split("|"):
            tokens = node_text.split(",")
            if len(tokens) != 2:
                raise SearchSpaceError(f"node {node_text!r} of the {cell} cell must hold 2 'op~input' pairs")
            for token in tokens:
                op_name, sep, inp = token.strip().partition("~")
                if not sep or op_name not in _OP_BY_NAME or not re.fullmatch(r"[0-9]+", inp.strip()):
                    raise SearchSpaceError(f"bad pair {token!r} in the {cell} cell; expected e.g. 'sep3~0'")
                pairs.append((_OP_BY_NAME[op_name], int(inp)))
        concat_text = m.group(2)
        try:
            concat = DEFAULT_CONCAT if concat_text is None else [int(c) for c in concat_text.split(",")]
        except ValueError:
            raise SearchSpaceError(f"bad concat [{concat_text}] in the {cell} cell") from None
        fields[cell], fields[f"{cell}_concat"] = pairs, concat
    missing = [cell for cell in CELL_TYPES if cell not in fields]
    if missing:
        raise SearchSpaceError(f"genotype text {text!r} lacks the {', '.join(missing)} cell")
    return DartsGenotype(**fields)


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval`` plus ``range(a, b)``, which DARTS genotypes use for the concat lists."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        if node.keywords or not 1 <= len(node.args) <= 3:
            raise SearchSpaceError(f"unsupported range call {ast.unparse(node)!r} in genotype text")
        return list(range(*(as_index(ast.literal_eval(a), "range argument") for a in node.args)))
    return ast.literal_eval(node)


def _parse_repr(text: str) -> DartsGenotype:
    """DARTS' namedtuple repr (or ours), read with :mod:`ast` so nothing in the text is executed."""
    fields = ("normal", "normal_concat", "reduce", "reduce_concat")
    try:
        call = ast.parse(text, mode="eval").body
        if not isinstance(call, ast.Call) or len(call.args) > len(fields):
            raise ValueError("not a Genotype(...) call")
        values = {field: _literal(arg) for field, arg in zip(fields, call.args, strict=False)}
        for kw in call.keywords:
            if kw.arg not in fields or kw.arg in values:
                raise SearchSpaceError(f"unexpected or repeated field {kw.arg!r} in genotype text {text!r}")
            values[kw.arg] = _literal(kw.value)
    except SearchSpaceError:
        raise
    except (SyntaxError, ValueError, TypeError) as err:
        raise SearchSpaceError(f"cannot parse DARTS genotype repr {text!r}: {err}") from None
    missing = [f for f in fields if f not in values]
    if missing:
        raise SearchSpaceError(f"genotype text {text!r} lacks field(s) {', '.join(missing)}")
    return DartsGenotype(**values)


def parse_genotype(text: str) -> DartsGenotype:
    """A :class:`DartsGenotype` from JSON text (``to_json``), the ``to_str`` form, or a DARTS-style repr
    ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), ...)``."""
    if not isinstance(text, str):
        raise SearchSpaceError(f"genotype text must be a string, got {type(text).__name__}: {text!r}")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise SearchSpaceError(f"genotype JSON {text!r} is not valid JSON: {err}") from None
        return DartsGenotype.from_json(data)
    if re.match(r"^\w*Genotype\s*\(", stripped):
        return _parse_repr(stripped)
    return _parse_short(stripped)


# ------------------------------------------------------------------------------------------- decoding
def _score_rows(table: Scores, cell: str, shape: tuple[int, ...], what: str) -> list:
    """``table[cell]`` as nested python floats (float64), after checking its shape and finiteness."""
    if cell not in table:
        raise SearchSpaceError(f"{what} lack cell type {cell!r}; expected keys {', '.join(CELL_TYPES)}")
    value = table[cell]
    value = value.detach() if isinstance(value, torch.Tensor) else value
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError) as err:
        raise SearchSpaceError(f"{what}[{cell!r}] is not numeric: {err}") from None
    if tuple(tensor.shape) != shape:
        raise SearchSpaceError(f"{what}[{cell!r}] has shape {tuple(tensor.shape)}, expected {shape}")
    if not torch.isfinite(tensor).all():
        raise SearchSpaceError(f"{what}[{cell!r}] contains non-finite values")
    return tensor.tolist()


_KEPT_OPS = tuple(o for o in range(len(PRIMITIVES)) if o != NONE_INDEX)


def decode(scores: Scores, edge_weights: Scores | None = None) -> DartsGenotype:
    """The DARTS discretisation: per node keep the 2 incoming edges whose best non-'none' score is highest,
    each with that best op. ``edge_weights`` ((14,) per cell, PC-DARTS) multiply into the scores row-wise
    first. Computed in float64 on python floats so results are deterministic; ties go to the lowest edge,
    then the lowest op index."""
    for what, table in (("scores", scores), ("edge_weights", edge_weights)):
        if table is not None and not isinstance(table, Mapping):
            raise SearchSpaceError(f"{what} must map cell type -> tensor, got {type(table).__name__}")
        if table is not None:
            extra = sorted(set(table) - set(CELL_TYPES))
            if extra:
                raise SearchSpaceError(f"unexpected cell type(s) {', '.join(map(repr, extra))} in {what}")
    fields: dict[str, Any] = {}
    for cell in CELL_TYPES:
        rows = _score_rows(scores, cell, (NUM_EDGES, len(PRIMITIVES)), "scores")
        if edge_weights is not None:
            weights = _score_rows(edge_weights, cell, (NUM_EDGES,), "edge_weights")
            rows = [[s * w for s in row] for row, w in zip(rows, weights, strict=True)]
        pairs: list[Pair] = []
        for node in range(NUM_NODES):
            best_op: dict[int, int] = {}
            for r in node_rows(node):
                best_op[r] = max(_KEPT_OPS, key=lambda o, row=rows[r]: (row[o], -o))
            ranked = sorted(node_rows(node), key=lambda r: (-rows[r][best_op[r]], r))[:2]
            pairs += [(PRIMITIVES[best_op[r]], EDGES[r][1]) for r in sorted(ranked)]
        fields[cell], fields[f"{cell}_concat"] = pairs, DEFAULT_CONCAT
    return DartsGenotype(**fields)
