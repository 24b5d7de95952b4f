"""Which cells an evaluation retrains: the ``--cells`` selectors, resolved against a launch's cells.

Selectors (combinable, comma-separated or repeated):

* ``consensus``: the watched criterion's consensus cell;
* ``criteria``: each criterion's consensus cell (credited to the criterion's name: ``magnitude``, ``ostr``...);
* ``seeds``: each search seed's final cell of the watched criterion (``--criterion`` picks another);
* ``random:K``: K distinct cells drawn uniformly from the space with a fixed seed (the random-search baseline);
  a draw is uniform because the space's own decoder is applied to i.i.d. uniform scores (every op of an edge,
  and every pair of a DARTS node's inputs, is equally likely to score highest), under the launch's decoder
  settings (NB201's ``nb201_none``), so the baseline draws from the cells the search could have chosen;
  ``accept`` (the protocol's size limit) rejects draws, which are redrawn;
* any other value: an explicit genotype.

Identical cells (genotype equality: the same architecture) are kept once and credited to every selector that
chose them. Pure functions: no files, Ray or MLflow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ostr_ray.retrain.protocols import RetrainError

KEYWORDS = ("consensus", "criteria", "seeds")
RANDOM = "random"
GIVEN = "given"
DEFAULT_SELECTORS = ("consensus", "criteria")
_RANDOM_RE = re.compile(r"^random:(-?\d+)$")
_WORD_RE = re.compile(r"[A-Za-z_][\w-]*(:\S*)?")
MAX_DRAWS_PER_CELL = 200
"""Random draws tried per wanted cell before giving up (duplicates and cells over the size limit are redrawn)."""


class EvaluateError(RetrainError):
    """Bad ``ostr-ray evaluate`` input, one line naming the bad value; raised before Ray starts."""


@dataclass(frozen=True)
class Selector:
    """One parsed selector: ``kind`` is a keyword, ``random`` (``count`` cells) or ``given`` (``text``)."""

    kind: str
    count: int = 0
    text: str = ""


@dataclass(frozen=True)
class Credit:
    """Who chose a cell: ``group`` is what the comparison table pairs (``consensus``, a criterion, ``seeds``,
    ``random``, ``given``); ``label`` says which one (``seed 2 (ostr)``, ``random 3``)."""

    group: str
    label: str

    def to_json(self) -> dict[str, str]:
        return {"group": self.group, "label": self.label}


@dataclass
class LaunchCells:
    """The cells a launch variant found, as its report records them."""

    space: str
    criterion: str
    consensus: str | None = None
    criterion_consensus: Mapping[str, str | None] = field(default_factory=dict)
    seeds: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    decoder: Mapping[str, Any] = field(default_factory=dict)
    """The decoder settings the search selected under (``{"nb201_none": ...}``); random draws use them too."""


@dataclass
class Cell:
    """One distinct cell to retrain, and every selector that chose it."""

    id: str
    genotype: Any
    credits: list[Credit] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(c.group for c in self.credits))


def parse_selectors(values: Sequence[str] | None) -> list[Selector]:
    """``--cells`` values as selectors. A value is split on commas when every piece is a keyword or ``random:K``;
    otherwise the whole value is one explicit genotype (DARTS genotypes hold commas)."""
    selectors: list[Selector] = []
    for value in values or DEFAULT_SELECTORS:
        text = value.strip()
        if not text:
            raise EvaluateError("--cells got an empty value")
        pieces = [p.strip() for p in text.split(",")]
        if all(_WORD_RE.fullmatch(p) for p in pieces):  # words, not a genotype (those hold | ~ or {)
            selectors.extend(_keyword(p) for p in pieces)
        else:
            selectors.append(Selector(GIVEN, text=text))
    return selectors


def _keyword(piece: str) -> Selector:
    if piece in KEYWORDS:
        return Selector(piece)
    if not piece.startswith(RANDOM + ":"):
        raise EvaluateError(
            f"unknown cell selector {piece!r}; choose from {', '.join(KEYWORDS)}, random:K or a genotype"
        )
    match = _RANDOM_RE.match(piece)
    if match is None or int(match.group(1)) < 1:
        raise EvaluateError(f"--cells {piece!r}: write random:K with K >= 1")
    return Selector(RANDOM, count=int(match.group(1)))


def select_cells(
    selectors: Sequence[Selector],
    found: LaunchCells,
    *,
    random_seed: int = 0,
    accept: Callable[[Any], bool] | None = None,
    notes: list[str] | None = None,
) -> list[Cell]:
    """The distinct cells ``selectors`` choose from ``found``, in the order first chosen, each with its credits.

    ``notes`` collects what a selector could not find (a criterion without a consensus). Raises
    :class:`EvaluateError` for an explicit genotype of another space or when no selector finds a cell."""
    from searchspaces import get_space

    space = get_space(found.space)
    cells: dict[Any, Cell] = {}
    for selector in selectors:
        for genotype, credit in _choices(selector, found, space, random_seed, accept, notes):
            cell = cells.setdefault(genotype, Cell(f"cell{len(cells)}", genotype))
            if credit not in cell.credits:
                cell.credits.append(credit)
    if not cells:
        raise EvaluateError(f"the launch has no cells for --cells {_describe(selectors)} (did its search finish?)")
    return list(cells.values())


def _describe(selectors: Sequence[Selector]) -> str:
    return ",".join(s.text or (f"{s.kind}:{s.count}" if s.kind == RANDOM else s.kind) for s in selectors)


def _choices(
    selector: Selector,
    found: LaunchCells,
    space: Any,
    random_seed: int,
    accept: Callable[[Any], bool] | None,
    notes: list[str] | None,
) -> Iterator[tuple[Any, Credit]]:
    notes = notes if notes is not None else []
    crit = found.criterion
    if selector.kind == "consensus":
        if found.consensus:
            yield _parse(space, found.consensus), Credit("consensus", f"consensus ({crit})")
        else:
            notes.append(f"no consensus cell of {crit} in the launch")
    elif selector.kind == "criteria":
        for name, text in found.criterion_consensus.items():
            if text:
                yield _parse(space, text), Credit(name, f"{name} consensus")
            else:
                notes.append(f"criterion {name} has no consensus cell")
    elif selector.kind == "seeds":
        for seed in sorted(found.seeds):
            text = found.seeds[seed].get(crit)
            if text:
                yield _parse(space, text), Credit("seeds", f"seed {seed} ({crit})")
            else:
                notes.append(f"search seed {seed} has no final {crit} cell")
    elif selector.kind == RANDOM:
        for i, genotype in enumerate(random_cells(space, selector.count, random_seed, found.decoder, accept)):
            yield genotype, Credit(RANDOM, f"random {i}")
    else:
        yield _parse(space, selector.text), Credit(GIVEN, f"given ({space.compact(selector.text)[:60]})")


def _parse(space: Any, text: str) -> Any:
    from searchspaces import SearchSpaceError

    try:
        return space.parse_genotype(text)
    except SearchSpaceError as exc:
        raise EvaluateError(f"cell {text[:120]!r} is not a {space.name} genotype: {exc}") from None


def random_cells(
    space: Any,
    count: int,
    seed: int,
    decoder: Mapping[str, Any] | None = None,
    accept: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """``count`` distinct genotypes of ``space`` drawn uniformly (see the module docstring) from ``seed``:
    the same arguments give the same cells on any machine (torch's CPU generator)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    shape = space.alpha_shape
    drawn: list[Any] = []
    for _ in range(MAX_DRAWS_PER_CELL * count):
        if len(drawn) == count:
            return drawn
        scores = {kind: torch.rand(shape, generator=generator) for kind in space.cell_types}
        genotype = space.decode(scores, **dict(decoder or {}))
        if genotype not in drawn and (accept is None or accept(genotype)):
            drawn.append(genotype)
    if len(drawn) < count:
        raise EvaluateError(
            f"random:{count}: only {len(drawn)} distinct {space.name} cells within the protocol's limits "
            f"after {MAX_DRAWS_PER_CELL * count} draws"
        )
    return drawn
