"""Cross-seed statistics of one variant at one epoch: agreement, vote shares, strength spread, rank
correlation and the consensus genotype (:class:`EpochStats`, made by :func:`compute_epoch_stats`).

Pure functions of the seeds' :class:`~ostr_ray.core.events.EpochReport` records; :mod:`.coordinator` decides
which reports make up an epoch and keeps the history. What each report contributes (its normalised strengths
under every criterion, its Kendall terms) is a :class:`SeedTerms`, which the coordinator makes when the report
arrives: completing an epoch of 1,000 seeds then only stacks and sums arrays instead of rescoring 1,000 reports
under every criterion (~0.1 ms each) on the report that completes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np
import torch

from ostr_ray.core.criteria import ArchState, get_criterion, list_criteria
from ostr_ray.core.events import EpochReport, Matrix
from searchspaces import SearchSpace, get_space

# ------------------------------------------------------------------------------------------- statistics


@cache
def _space(name: str) -> SearchSpace:
    """Spaces are immutable records; building one per report would be wasted work."""
    return get_space(name)


@lru_cache(maxsize=4096)
def _edge_choices(space_name: str, text: str) -> dict[str, dict[int, int]]:
    """Parsed once per distinct genotype string: the same few strings recur every epoch for every seed."""
    return _space(space_name).parse_genotype(text).edge_choices()


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each edge row rescaled to sum to 1, so seeds whose strengths differ in scale compare on shares.

    Non-finite entries count as 0; a row with negative entries is shifted to start at 0 (all built-in
    criteria are non-negative, this only keeps a custom criterion from producing negative shares); an
    all-zero row (e.g. before the architecture steps start) becomes uniform rather than NaN.
    """
    values = np.asarray(matrix, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    values = values - np.minimum(values.min(axis=-1, keepdims=True), 0.0)
    totals = values.sum(axis=-1, keepdims=True)
    out = np.full_like(values, 1.0 / values.shape[-1])
    np.divide(values, totals, out=out, where=totals > 0)
    return out


def normalised_strength(report: EpochReport, criterion: str, cells: tuple[str, ...]) -> Matrix:
    """The scores ``criterion`` ranks by (so ``magnitude`` uses betas), row-normalised per cell type."""
    try:
        selection = get_criterion(criterion)(ArchState.from_report(report))
        scores = {cell: torch.as_tensor(selection.scores[cell]).double().numpy() for cell in cells}
    except KeyError as err:
        raise ValueError(
            f"seed {report.seed} epoch {report.epoch}: criterion {criterion!r} needs {err}, missing from the report"
        ) from None
    return {cell: normalise_rows(matrix) for cell, matrix in scores.items()}


def modal_genotype(genotypes: list[str | None]) -> tuple[str | None, float]:
    """The most common genotype and the share of *all* seeds holding it (a seed without one never agrees).

    Ties between equally common candidates go to the lexicographically smallest string, so the modal
    genotype does not depend on the order in which seeds reported.
    """
    counts = Counter(g for g in genotypes if g)
    if not counts:
        return None, 0.0
    modal = min(counts, key=lambda g: (-counts[g], g))
    return modal, counts[modal] / len(genotypes)


def _vote_index(space: SearchSpace, text: str) -> np.ndarray:
    """The flat (cell, edge, op) positions a genotype votes for, in the space's ``cell_types`` order."""
    size = space.num_edges * len(space.ops)
    return np.asarray(
        [
            space.cell_types.index(cell) * size + edge * len(space.ops) + op
            for cell, choices in _edge_choices(space.name, text).items()
            for edge, op in choices.items()
        ],
        dtype=np.int64,
    )


def vote_counts(space: SearchSpace, genotypes: list[str | None]) -> Matrix:
    """Per cell, (E, O) counts of seeds whose genotype put op o on edge e; dropped edges vote for nothing."""
    return _count_votes(space, [_vote_index(space, text) for text in genotypes if text])


def _count_votes(space: SearchSpace, index: list[np.ndarray]) -> Matrix:
    """:func:`vote_counts` from the genotypes' :func:`_vote_index`: one ``bincount`` where a loop over 1,000
    DARTS genotypes' edges cost tens of milliseconds per criterion at each epoch's completion."""
    shape = (len(space.cell_types), space.num_edges, len(space.ops))
    flat = np.bincount(np.concatenate(index), minlength=int(np.prod(shape))) if index else np.zeros(np.prod(shape))
    counts = flat.astype(np.float64).reshape(shape)
    return {cell: counts[i] for i, cell in enumerate(space.cell_types)}


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between matching rows of ``x`` and ``y`` (shape (..., O)); NaN for a constant row.

    The same statistic as ``scipy.stats.kendalltau`` (the tests check they agree), vectorised over all seed
    pairs and edges at once: scipy costs ~1 ms per call, and a DARTS epoch with 10 seeds needs 1260 calls.
    """
    dx = np.sign(x[..., :, None] - x[..., None, :])
    dy = np.sign(y[..., :, None] - y[..., None, :])
    upper = np.triu(np.ones(dx.shape[-2:], dtype=bool), k=1)
    concordance = (dx * dy)[..., upper].sum(axis=-1)
    untied_x = (dx[..., upper] != 0).sum(axis=-1)
    untied_y = (dy[..., upper] != 0).sum(axis=-1)
    denominator = np.sqrt(untied_x.astype(np.float64) * untied_y)
    out = np.full(denominator.shape, np.nan)
    np.divide(concordance, denominator, out=out, where=denominator > 0)
    return out


def _tau_terms(strength: Matrix) -> tuple[np.ndarray, np.ndarray]:
    """One seed's op-pair order signs, each edge row scaled by 1/sqrt(its untied pairs), and which rows have any.

    Kendall's tau-b of two rows is the dot product of these scaled sign vectors, so the sum of tau over every
    seed pair is a function of per-seed sums (see :func:`mean_kendall_tau`).
    """
    rows = np.concatenate(
        [np.asarray(strength[c], np.float64).reshape(-1, np.shape(strength[c])[-1]) for c in sorted(strength)]
    )
    first, second = np.triu_indices(rows.shape[-1], k=1)
    signs = np.sign(rows[:, first] - rows[:, second])
    untied = np.abs(signs).sum(axis=-1)
    scale = np.divide(1.0, np.sqrt(untied), out=np.zeros_like(untied), where=untied > 0)
    return (signs * scale[:, None]).ravel(), (untied > 0).astype(np.float64)


def mean_kendall_tau(strengths: list[Matrix]) -> float | None:
    """Mean over seed pairs and over every edge of every cell of the tau-b between the two seeds' score rows.

    It measures whether seeds *rank* the ops alike, which genotype agreement (argmax only) cannot show.
    Edges where a seed's row is constant have no tau and are skipped; ``None`` with fewer than 2 seeds or
    when no edge has a tau. Exact over *every* pair, in O(seeds): with t_i a seed's scaled signs
    (:func:`_tau_terms`), the sum over pairs i < j of t_i . t_j is (|sum t_i|^2 - sum |t_i|^2) / 2, and the
    number of (pair, edge) taus is the same sum over the rows' has-a-tau flags; 1000 DARTS seeds take
    milliseconds where the pairwise loop took minutes.
    """
    return _mean_tau([_tau_terms(s) for s in strengths])


def _mean_tau(terms: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """:func:`mean_kendall_tau` from the seeds' :func:`_tau_terms` (made once per report, see :class:`SeedTerms`)."""
    if len(terms) < 2:
        return None
    signs = np.stack([t for t, _ in terms])
    valid = np.stack([v for _, v in terms])
    tau_sum = (np.square(signs.sum(axis=0)).sum() - np.square(signs).sum()) / 2.0
    count = (np.square(valid.sum(axis=0)).sum() - valid.sum()) / 2.0
    return float(tau_sum / count) if count > 0.5 else None


def consensus_genotype(space: SearchSpace, votes: Matrix, strength_sum: Matrix, n_seeds: int) -> str:
    """Decode ``votes + strength_sum / (n_seeds + 1)`` with the space's own decoder.

    Every normalised strength is <= 1, so the tie-break term is < 1 and can only separate equal vote counts;
    going through ``space.decode`` applies the space's rules ('none' never chosen, DARTS' two inputs per
    node). Edge weights are not passed: the votes already come from edge-weighted genotypes, and a row
    factor would scale the vote counts themselves.
    """
    scores = {
        cell: torch.as_tensor(votes[cell] + strength_sum[cell] / (n_seeds + 1), dtype=torch.float64)
        for cell in space.cell_types
    }
    return space.decode(scores).to_str()


# ------------------------------------------------------------------------------------------- SeedTerms


class SeedTerms:
    """What one report contributes to its epoch's statistics, computed once and kept beside the report.

    Each criterion's normalised strength and vote positions, and the watched criterion's Kendall terms, are
    memoised on first use;
    :meth:`prepare` computes, when the report arrives, those :func:`compute_epoch_stats` will ask for, so the
    report that completes an epoch only stacks and sums what every seed's terms already hold. Values are the
    very arrays the from-scratch computation makes, so the statistics do not depend on whether terms were kept.
    A failure (a criterion whose scores the report lacks) is not memoised: it is raised where the statistics
    need that criterion, as before.
    """

    __slots__ = ("_strength", "_tau", "_votes", "report")

    def __init__(self, report: EpochReport) -> None:
        self.report = report
        self._strength: dict[tuple[str, tuple[str, ...]], Matrix] = {}
        self._tau: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}
        self._votes: dict[tuple[str, str], np.ndarray | None] = {}

    def genotype(self, criterion: str) -> str | None:
        return self.report.genotypes.get(criterion) or None

    def votes(self, criterion: str, space: SearchSpace) -> np.ndarray | None:
        """The :func:`_vote_index` of the report's ``criterion`` genotype (``None``: it has none)."""
        key = (criterion, space.name)
        if key not in self._votes:
            text = self.genotype(criterion)
            self._votes[key] = _vote_index(space, text) if text else None
        return self._votes[key]

    def strength(self, criterion: str, cells: tuple[str, ...]) -> Matrix:
        """:func:`normalised_strength` of the report under ``criterion``."""
        key = (criterion, tuple(cells))
        if key not in self._strength:
            self._strength[key] = normalised_strength(self.report, criterion, key[1])
        return self._strength[key]

    def tau(self, criterion: str, cells: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The report's :func:`_tau_terms` under ``criterion`` (the watched one's enter ``mean_kendall_tau``)."""
        key = (criterion, tuple(cells))
        if key not in self._tau:
            self._tau[key] = _tau_terms(self.strength(criterion, cells))
        return self._tau[key]

    def prepare(self, watched: str) -> SeedTerms:
        """Compute now what the epoch statistics under ``watched`` will need of this report: the watched
        criterion's strength and Kendall terms, and the strength of every other registered criterion it
        carries a genotype for. Errors are left for :func:`compute_epoch_stats` to raise or skip."""
        try:
            space = _space(self.report.space)
        except ValueError:
            return self  # an unknown space: compute_epoch_stats says so
        others = {c for c, g in self.report.genotypes.items() if g} & set(list_criteria())
        for name in [watched, *sorted(others - {watched})]:
            try:
                self.votes(name, space)
                if name == watched:
                    self.tau(name, space.cell_types)
                else:
                    self.strength(name, space.cell_types)
            except ValueError:
                continue
        return self


# ------------------------------------------------------------------------------------------- EpochStats


@dataclass
class EpochStats:
    """The cross-seed picture of one variant at one epoch (see the module docstring for which seeds count)."""

    variant: str
    epoch: int
    space: str
    criterion: str
    """The watched criterion: modal/agreement/votes/strength/consensus below all refer to it."""
    n_seeds: int
    report_epochs: dict[int, int]
    """seed -> epoch of the report it contributed (< ``epoch`` for a seed that finished earlier)."""
    genotypes: dict[int, dict[str, str]]
    """seed -> criterion -> genotype string."""
    modal_genotype: str | None
    agreement: float
    """Share of the ``n_seeds`` seeds whose watched-criterion genotype equals ``modal_genotype``."""
    vote_share: Matrix
    """cell -> (E, O): share of seeds whose genotype chose op o on edge e."""
    strength_mean: Matrix
    """cell -> (E, O): mean over seeds of the row-normalised criterion scores."""
    strength_std: Matrix
    """cell -> (E, O): population std (ddof=0) over seeds of the row-normalised criterion scores."""
    mean_kendall_tau: float | None
    stable_for: dict[int, int]
    """seed -> epochs its watched-criterion genotype has been unchanged (from its report; 0 when absent)."""
    consensus_genotype: str | None
    consensus_stable_for: int
    """Epochs the consensus genotype has been unchanged: 0 on the epoch it (re)appears, +1 per equal epoch."""
    criterion_consensus: dict[str, str | None] = field(default_factory=dict)
    """Every registered criterion the reports carry -> its consensus genotype (the ablation, across seeds)."""
    criterion_agreement: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "epoch": self.epoch,
            "space": self.space,
            "criterion": self.criterion,
            "n_seeds": self.n_seeds,
            "report_epochs": {str(s): e for s, e in self.report_epochs.items()},
            "genotypes": {str(s): dict(g) for s, g in self.genotypes.items()},
            "modal_genotype": self.modal_genotype,
            "agreement": self.agreement,
            "vote_share": _lists(self.vote_share),
            "strength_mean": _lists(self.strength_mean),
            "strength_std": _lists(self.strength_std),
            "mean_kendall_tau": self.mean_kendall_tau,
            "stable_for": {str(s): n for s, n in self.stable_for.items()},
            "consensus_genotype": self.consensus_genotype,
            "consensus_stable_for": self.consensus_stable_for,
            "criterion_consensus": dict(self.criterion_consensus),
            "criterion_agreement": dict(self.criterion_agreement),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochStats:
        data = dict(data)
        for key in ("report_epochs", "genotypes", "stable_for"):
            data[key] = {int(s): v for s, v in data[key].items()}
        for key in ("vote_share", "strength_mean", "strength_std"):
            data[key] = {c: np.asarray(m, dtype=np.float64) for c, m in data[key].items()}
        return cls(**data)


def _lists(matrix: Matrix) -> dict[str, list]:
    return {cell: np.asarray(m).tolist() for cell, m in matrix.items()}


def _criterion_consensus(
    space: SearchSpace, terms: list[SeedTerms], criterion: str
) -> tuple[str | None, float, Matrix, list[Matrix]]:
    """Consensus, agreement, vote counts and per-seed normalised strength of one criterion."""
    texts = [t.genotype(criterion) for t in terms]
    strengths = [t.strength(criterion, space.cell_types) for t in terms]
    votes = _count_votes(space, [i for i in (t.votes(criterion, space) for t in terms) if i is not None])
    _, agreement = modal_genotype(texts)
    if not any(texts):
        return None, agreement, votes, strengths
    summed = {cell: np.sum([s[cell] for s in strengths], axis=0) for cell in space.cell_types}
    return consensus_genotype(space, votes, summed, len(terms)), agreement, votes, strengths


def compute_epoch_stats(
    variant: str,
    epoch: int,
    criterion: str,
    reports: Mapping[int, EpochReport | SeedTerms],
    previous: EpochStats | None,
) -> EpochStats:
    """The :class:`EpochStats` of ``reports`` (seed -> the report it contributes, or its :class:`SeedTerms`),
    chained to ``previous``."""
    seeds = sorted(reports)
    terms = [r if isinstance(r, SeedTerms) else SeedTerms(r) for r in (reports[s] for s in seeds)]
    ordered = [t.report for t in terms]
    reports = dict(zip(seeds, ordered, strict=True))
    space = _space(_common_space(variant, ordered))
    consensus, _, votes, strengths = _criterion_consensus(space, terms, criterion)
    modal, agreement = modal_genotype([r.genotypes.get(criterion) or None for r in ordered])
    stacked = {cell: np.stack([s[cell] for s in strengths]) for cell in space.cell_types}
    held = previous is not None and consensus is not None and previous.consensus_genotype == consensus
    others = _other_criteria(space, terms, criterion)
    return EpochStats(
        variant=variant,
        epoch=epoch,
        space=space.name,
        criterion=criterion,
        n_seeds=len(seeds),
        report_epochs={s: reports[s].epoch for s in seeds},
        genotypes={s: dict(reports[s].genotypes) for s in seeds},
        modal_genotype=modal,
        agreement=agreement,
        vote_share={cell: votes[cell] / len(seeds) for cell in space.cell_types},
        strength_mean={cell: m.mean(axis=0) for cell, m in stacked.items()},
        strength_std={cell: m.std(axis=0) for cell, m in stacked.items()},
        mean_kendall_tau=_mean_tau([t.tau(criterion, space.cell_types) for t in terms]),
        stable_for={s: int(reports[s].stable_for.get(criterion, 0)) for s in seeds},
        consensus_genotype=consensus,
        consensus_stable_for=previous.consensus_stable_for + 1 if held else 0,
        criterion_consensus={criterion: consensus, **{c: v[0] for c, v in others.items()}},
        criterion_agreement={criterion: agreement, **{c: v[1] for c, v in others.items()}},
    )


def _common_space(variant: str, reports: list[EpochReport]) -> str:
    names = {r.space for r in reports}
    if len(names) != 1:
        raise ValueError(f"variant {variant!r} mixes search spaces {sorted(names)}; one variant is one space")
    return names.pop()


def _other_criteria(space: SearchSpace, terms: list[SeedTerms], watched: str) -> dict[str, tuple[str | None, float]]:
    """Consensus and agreement of every other registered criterion some report carries a genotype for."""
    names = {c for t in terms for c, g in t.report.genotypes.items() if g} - {watched}
    out = {}
    for name in sorted(names & set(list_criteria())):
        try:
            consensus, agreement, _, _ = _criterion_consensus(space, terms, name)
        except ValueError:
            continue  # a side criterion whose scores a report lacks must not block the watched one's stats
        out[name] = (consensus, agreement)
    return out
