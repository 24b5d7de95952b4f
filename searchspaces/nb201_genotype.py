"""The NAS-Bench-201 genotype: ops, edges, the NB201 string form and the decoder.

The space (Dong & Yang, ICLR 2020) is one cell type, ``"normal"``, with 4 nodes and 6 edges; every edge picks
one of 5 ops, so there are ``5 ** 6 = 15625`` cells.

Indices
-------
:attr:`NB201Genotype.code` is *our* canonical enumeration, ``sum(op_index[e] * 5 ** e)``. The benchmark's own
index (0..15624 in its files) is a permutation that is stored in those files and cannot be computed from the
string (row 0 of NB201's table is an ``avg_pool_3x3`` cell), so mapping to or from NB201's index always goes
through the benchmark table (:class:`ostr_ray.core.nb201_bench.NB201Table`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from searchspaces.base import Scores, SearchSpaceError

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV1, CONV3, POOL = range(len(OPS))

NUM_NODES = 4
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""Canonical edge order as ``(to, from)``; alpha row ``e`` is ``EDGES[e]`` (NB201's sorted "i<-j" keys)."""
EDGE_INDEX: dict[tuple[int, int], int] = {edge: row for row, edge in enumerate(EDGES)}
NUM_ARCHS = len(OPS) ** len(EDGES)
PARAMETER_FREE_OPS = frozenset({"none", "skip_connect", "avg_pool_3x3"})
SHORT_OPS = {
    "none": "none",
    "skip_connect": "skip",
    "nor_conv_1x1": "c1x1",
    "nor_conv_3x3": "c3x3",
    "avg_pool_3x3": "avg3",
}
"""Short op names for tables and plots."""
EDGE_LABELS = tuple(f"{to}<-{src}" for to, src in EDGES)
"""Edge row labels in NB201's own "to<-from" form."""


# --------------------------------------------------------------------------------------------- genotype


@dataclass(frozen=True)
class NB201Genotype:
    """One NB201 cell: ``ops[e]`` is the op on edge ``EDGES[e]``."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != len(EDGES):
            raise SearchSpaceError(f"an NB201 cell has {len(EDGES)} edges, got {len(ops)} ops: {ops!r}")
        for op in ops:
            if op not in OPS:
                raise SearchSpaceError(f"unknown NB201 op {op!r}; ops are {', '.join(OPS)}")
        object.__setattr__(self, "ops", ops)

    # -- string form ---------------------------------------------------------------------------------

    @classmethod
    def from_string(cls, text: str) -> NB201Genotype:
        """Parse NB201's string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...~2|``.

        Strict on purpose (only surrounding whitespace is forgiven): a string that parses is exactly the
        canonical string, so benchmark lookups by string cannot silently miss.
        """
        if not isinstance(text, str):
            raise SearchSpaceError(f"an NB201 genotype string must be a str, got {type(text).__name__}")
        text = text.strip()
        node_texts = text.split("+")
        if len(node_texts) != NUM_NODES - 1:
            raise SearchSpaceError(
                f"NB201 string {text!r} has {len(node_texts)} '+'-separated nodes, expected {NUM_NODES - 1}"
            )
        ops: dict[tuple[int, int], str] = {}
        for to_node, node_text in enumerate(node_texts, start=1):
            for from_node, op in enumerate(_parse_node(node_text, to_node)):
                ops[(to_node, from_node)] = op
        return cls(tuple(ops[edge] for edge in EDGES))

    def to_str(self) -> str:
        nodes = []
        for to_node in range(1, NUM_NODES):
            entries = (f"{self.ops[EDGE_INDEX[(to_node, j)]]}~{j}" for j in range(to_node))
            nodes.append("|" + "|".join(entries) + "|")
        return "+".join(nodes)

    def __str__(self) -> str:
        return self.to_str()

    # -- canonical enumeration -----------------------------------------------------------------------

    @property
    def code(self) -> int:
        """Our enumeration index ``sum(op_index[e] * 5**e)`` in ``0..15624`` (not NB201's index)."""
        return sum(OPS.index(op) * len(OPS) ** row for row, op in enumerate(self.ops))

    @classmethod
    def from_code(cls, code: int) -> NB201Genotype:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < NUM_ARCHS:
            raise SearchSpaceError(f"NB201 code must be an int in 0..{NUM_ARCHS - 1}, got {code!r}")
        ops = []
        for _ in EDGES:
            code, op_index = divmod(code, len(OPS))
            ops.append(OPS[op_index])
        return cls(tuple(ops))

    @classmethod
    def all_genotypes(cls) -> Iterator[NB201Genotype]:
        """All 15,625 cells in :attr:`code` order."""
        return (cls.from_code(code) for code in range(NUM_ARCHS))

    # -- JSON and the Genotype protocol ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"space": "nb201", "arch": self.to_str()}

    @classmethod
    def from_json(cls, mapping: Mapping[str, Any]) -> NB201Genotype:
        if not isinstance(mapping, Mapping):
            raise SearchSpaceError(f"an NB201 genotype JSON must be an object, got {type(mapping).__name__}")
        space = mapping.get("space", "nb201")
        if space != "nb201":
            raise SearchSpaceError(f"genotype JSON is for space {space!r}, not 'nb201'")
        if "arch" not in mapping:
            raise SearchSpaceError(f"NB201 genotype JSON has no 'arch' key: {dict(mapping)!r}")
        return cls.from_string(mapping["arch"])

    def edge_choices(self) -> dict[str, dict[int, int]]:
        """``{"normal": {edge row: op index}}`` for the edges the cell keeps.

        Edges whose op is ``'none'`` are left out: they carry nothing, matching how DARTS-like genotypes list
        only their kept edges.
        """
        return {"normal": {row: OPS.index(op) for row, op in enumerate(self.ops) if op != "none"}}


def _parse_node(node_text: str, to_node: int) -> list[str]:
    """Ops of ``|op~0|op~1|...|`` for node ``to_node``, in input order; strict about every character."""
    if len(node_text) < 2 or not (node_text.startswith("|") and node_text.endswith("|")):
        raise SearchSpaceError(f"NB201 node {to_node} text {node_text!r} must start and end with '|'")
    entries = node_text[1:-1].split("|")
    if len(entries) != to_node:
        raise SearchSpaceError(f"NB201 node {to_node} {node_text!r} has {len(entries)} inputs, expected {to_node}")
    ops = []
    for position, entry in enumerate(entries):
        op, sep, source = entry.partition("~")
        if not sep or source != str(position):
            raise SearchSpaceError(
                f"NB201 node {to_node} entry {entry!r} must be 'op~{position}' (input {position} at position "
                f"{position})"
            )
        if op not in OPS:
            raise SearchSpaceError(f"unknown NB201 op {op!r} in entry {entry!r}; ops are {', '.join(OPS)}")
        ops.append(op)
    return ops


def all_genotypes() -> Iterator[NB201Genotype]:
    """All 15,625 NB201 cells in :attr:`NB201Genotype.code` order."""
    return NB201Genotype.all_genotypes()


def genotype_from_json(mapping: Mapping[str, Any]) -> NB201Genotype:
    return NB201Genotype.from_json(mapping)


def parse_genotype(text: str) -> NB201Genotype:
    """An NB201 string, or a JSON text of :meth:`NB201Genotype.to_json`."""
    if isinstance(text, str) and text.lstrip().startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise SearchSpaceError(f"bad NB201 genotype JSON {text!r}: {err}") from None
        return genotype_from_json(mapping)
    return NB201Genotype.from_string(text)


# --------------------------------------------------------------------------------------------- decode


NB201_NONE_MODES: tuple[str, ...] = ("exclude", "include")
"""How the decoder treats ``'none'`` (the ``nb201_none`` setting): ``exclude`` never picks it (the OStr-DARTS
authors' code; the default), ``include`` lets it compete in the argmax like any other op (xautodl's DARTS
baseline on NB201, whose ``genotype()`` takes the argmax over all five ops)."""


def decode(scores: Scores, edge_weights: Scores | None = None, *, nb201_none: str = "exclude") -> NB201Genotype:
    """Per edge, the highest-scoring op (``'none'`` only with ``nb201_none="include"``); ties go to the lowest
    op index (with ``include``, to ``'none'``, as torch's argmax in xautodl).

    The comparison runs in Python floats (float64) so ties are broken the same way on every device and
    torch version. ``edge_weights["normal"]`` ((6,)) multiplies the rows when given; a positive per-edge
    factor cannot change a per-edge argmax, it is accepted for the shared ``decode`` signature.
    """
    if nb201_none not in NB201_NONE_MODES:
        raise SearchSpaceError(f"nb201_none must be one of {', '.join(NB201_NONE_MODES)}, got {nb201_none!r}")
    first = NONE if nb201_none == "include" else SKIP
    rows = _score_rows(scores)
    if edge_weights is not None:
        factors = _edge_factors(edge_weights)
        rows = [[value * factor for value in row] for row, factor in zip(rows, factors, strict=True)]
    ops = []
    for row in rows:
        best = first
        for op_index in range(first + 1, len(OPS)):
            if row[op_index] > row[best]:
                best = op_index
        ops.append(OPS[best])
    return NB201Genotype(tuple(ops))


def _only_normal(mapping: Scores, what: str) -> torch.Tensor:
    if not isinstance(mapping, Mapping):
        raise SearchSpaceError(f"NB201 {what} must be a mapping {{'normal': tensor}}, got {type(mapping).__name__}")
    extra = sorted(set(mapping) - {"normal"})
    if extra:
        raise SearchSpaceError(f"NB201 has only the 'normal' cell type; unexpected {what} keys {extra}")
    if "normal" not in mapping:
        raise SearchSpaceError(f"NB201 {what} lack the 'normal' key")
    return torch.as_tensor(mapping["normal"]).detach()


def _score_rows(scores: Scores) -> list[list[float]]:
    tensor = _only_normal(scores, "scores")
    if tuple(tensor.shape) != (len(EDGES), len(OPS)):
        raise SearchSpaceError(f"NB201 scores must have shape {(len(EDGES), len(OPS))}, got {tuple(tensor.shape)}")
    tensor = tensor.to("cpu", torch.float64)
    if not torch.isfinite(tensor).all():
        raise SearchSpaceError(f"NB201 scores contain non-finite values: {tensor.tolist()}")
    return tensor.tolist()


def _edge_factors(edge_weights: Scores) -> list[float]:
    tensor = _only_normal(edge_weights, "edge weights")
    if tuple(tensor.shape) != (len(EDGES),):
        raise SearchSpaceError(f"NB201 edge weights must have shape {(len(EDGES),)}, got {tuple(tensor.shape)}")
    return tensor.to("cpu", torch.float64).tolist()
