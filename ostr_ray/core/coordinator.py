"""Cross-seed statistics of a multi-seed search: agreement, vote shares, strength spread, rank correlation,
a consensus genotype, and the experiment-level stop rule.

This is the pure core that a Ray Tune ``Callback`` (feeding :meth:`Coordinator.update` /
:meth:`Coordinator.mark_finished`, persisting :meth:`Coordinator.state_dict`) and a ``Stopper`` (asking
:meth:`Coordinator.seed_should_stop` / :meth:`Coordinator.experiment_should_stop`) wrap. It imports neither
Ray nor MLflow so it can be tested with hand-made :class:`~ostr_ray.events.EpochReport` records and reused by
any other scheduler.

Trials are keyed by ``(variant, seed)``; variants (e.g. ``"nb201-cifar10"``) are independent groups and every
statistic is per variant. Trials run asynchronously, so epoch ``k`` of a variant is summarised only once
every still-running trial of that variant has reported epoch ``k``: finished or stopped trials contribute
their last report up to ``k`` (a seed that stopped early keeps voting with its final genotype), failed trials
are left out. Each epoch's :class:`EpochStats` is computed exactly once and never revised, which is what keeps
re-reported (retried) epochs from being counted twice and makes the stability counters well defined.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import combinations
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from ostr_ray.core.criteria import ArchState, get_criterion, list_criteria
from ostr_ray.core.events import EpochReport, Matrix
from searchspaces import SearchSpace, get_space

TrialStatus = Literal["running", "finished", "stopped", "failed"]
_DONE_STATUSES = ("finished", "stopped", "failed")
_STATE_VERSION = 1


class TrialKey(NamedTuple):
    """One trial: a variant (an independent group of seeds) and the seed within it."""

    variant: str
    seed: int


# ------------------------------------------------------------------------------------------- statistics


@cache
def _space(name: str) -> SearchSpace:
    """Spaces are immutable records; building one per report would be wasted work."""
    return get_space(name)


@lru_cache(maxsize=4096)
def _edge_choices(space_name: str, text: str) -> dict[str, dict[int, int]]:
    """Parsed once per distinct genotype string: the same few strings recur every epoch for every seed."""
    return _space(space_name).parse_genotype(text).edge_choices()


def _tensors(matrix: Matrix) -> dict[str, torch.Tensor]:
    return {cell: torch.from_numpy(np.array(value, dtype=np.float64)) for cell, value in matrix.items()}


def arch_state(report: EpochReport) -> ArchState:
    """The :class:`ArchState` a criterion saw when the report was made, rebuilt from the report's arrays."""
    return ArchState(
        alphas=_tensors(report.alphas),
        betas=_tensors(report.betas),
        mean={name: _tensors(cells) for name, cells in report.scores.items()},
        stderr={name: _tensors(cells) for name, cells in report.stderr.items()},
        edge_weights=_tensors(getattr(report, "edge_weights", {}) or {}),
    )


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
        selection = get_criterion(criterion)(arch_state(report))
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


def vote_counts(space: SearchSpace, genotypes: list[str | None]) -> Matrix:
    """Per cell, (E, O) counts of seeds whose genotype put op o on edge e; dropped edges vote for nothing."""
    counts = {cell: np.zeros((space.num_edges, len(space.ops))) for cell in space.cell_types}
    for text in genotypes:
        if not text:
            continue
        for cell, choices in _edge_choices(space.name, text).items():
            for edge, op in choices.items():
                counts[cell][edge, op] += 1.0
    return counts


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


def mean_kendall_tau(strengths: list[Matrix]) -> float | None:
    """Mean over seed pairs and over every edge of every cell of the tau-b between the two seeds' score rows.

    It measures whether seeds *rank* the ops alike, which genotype agreement (argmax only) cannot show.
    Edges where a seed's row is constant have no tau and are skipped; ``None`` with fewer than 2 seeds or
    when no edge has a tau.
    """
    if len(strengths) < 2:
        return None
    taus = [kendall_tau_b(a[cell], b[cell]).ravel() for a, b in combinations(strengths, 2) for cell in sorted(a)]
    values = np.concatenate(taus)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


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
    space: SearchSpace, reports: list[EpochReport], criterion: str
) -> tuple[str | None, float, Matrix, list[Matrix]]:
    """Consensus, agreement, vote counts and per-seed normalised strength of one criterion."""
    texts = [r.genotypes.get(criterion) or None for r in reports]
    strengths = [normalised_strength(r, criterion, space.cell_types) for r in reports]
    votes = vote_counts(space, texts)
    _, agreement = modal_genotype(texts)
    if not any(texts):
        return None, agreement, votes, strengths
    summed = {cell: np.sum([s[cell] for s in strengths], axis=0) for cell in space.cell_types}
    return consensus_genotype(space, votes, summed, len(reports)), agreement, votes, strengths


def compute_epoch_stats(
    variant: str, epoch: int, criterion: str, reports: dict[int, EpochReport], previous: EpochStats | None
) -> EpochStats:
    """The :class:`EpochStats` of ``reports`` (seed -> the report it contributes), chained to ``previous``."""
    seeds = sorted(reports)
    ordered = [reports[s] for s in seeds]
    space = _space(_common_space(variant, ordered))
    consensus, _, votes, strengths = _criterion_consensus(space, ordered, criterion)
    modal, agreement = modal_genotype([r.genotypes.get(criterion) or None for r in ordered])
    stacked = {cell: np.stack([s[cell] for s in strengths]) for cell in space.cell_types}
    held = previous is not None and consensus is not None and previous.consensus_genotype == consensus
    others = _other_criteria(space, ordered, criterion)
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
        mean_kendall_tau=mean_kendall_tau(strengths),
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


def _other_criteria(
    space: SearchSpace, reports: list[EpochReport], watched: str
) -> dict[str, tuple[str | None, float]]:
    """Consensus and agreement of every other registered criterion some report carries a genotype for."""
    names = {c for r in reports for c, g in r.genotypes.items() if g} - {watched}
    out = {}
    for name in sorted(names & set(list_criteria())):
        try:
            consensus, agreement, _, _ = _criterion_consensus(space, reports, name)
        except ValueError:
            continue  # a side criterion whose scores a report lacks must not block the watched one's stats
        out[name] = (consensus, agreement)
    return out


# ------------------------------------------------------------------------------------------- trials


@dataclass
class _Trial:
    status: TrialStatus = "running"
    reason: str = ""
    reports: dict[int, EpochReport] = field(default_factory=dict)

    @property
    def last_epoch(self) -> int:
        return max(self.reports, default=0)

    def report_at(self, epoch: int) -> EpochReport | None:
        """The latest report up to ``epoch``: what this seed believed at that point of the search."""
        epochs = [e for e in self.reports if e <= epoch]
        return self.reports[max(epochs)] if epochs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "reports": [self.reports[e].to_json() for e in sorted(self.reports)],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Trial:
        reports = [EpochReport.from_json(r) for r in data["reports"]]
        return cls(status=data["status"], reason=data["reason"], reports={r.epoch: r for r in reports})


# ------------------------------------------------------------------------------------------- Coordinator


class Coordinator:
    """Collects every trial's epoch reports; turns each completed epoch of a variant into :class:`EpochStats`.

    ``criterion`` is the watched criterion; ``patience`` > 0 with ``experiment_stop`` enables the experiment
    stop once every variant's consensus held ``patience`` epochs with ``agreement`` >= the threshold.
    """

    def __init__(
        self, criterion: str = "ostr", patience: int = 0, agreement: float = 0.8, experiment_stop: bool = True
    ) -> None:
        get_criterion(criterion)  # fail at construction, not at the first completed epoch
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if not 0.0 <= agreement <= 1.0:
            raise ValueError(f"agreement threshold must be in [0, 1], got {agreement}")
        self.criterion = criterion
        self.patience = patience
        self.agreement = agreement
        self.experiment_stop = experiment_stop
        self._trials: dict[TrialKey, _Trial] = {}
        self._stats: dict[str, list[EpochStats]] = {}

    # -- feeding -------------------------------------------------------------------------------------------

    def register(self, key: TrialKey) -> None:
        """Declare a trial up front, so no epoch of its variant is summarised before it reports."""
        self._trial(key)

    def update(self, key: TrialKey, report: EpochReport) -> list[EpochStats]:
        """Store ``report`` (replacing an earlier report of the same epoch) and return newly completed stats.

        A report from a trial marked failed means Tune retried it, so the trial counts as running again.
        Epochs already summarised are final: a re-reported epoch only replaces the stored report.
        """
        key = TrialKey(*key)
        trial = self._trial(key)
        trial.reports[int(report.epoch)] = report
        if trial.status == "failed":
            trial.status, trial.reason = "running", ""
        return self._advance(key.variant)

    def mark_finished(self, key: TrialKey, status: TrialStatus, reason: str = "") -> list[EpochStats]:
        """Record how a trial ended; returns the stats completed now that the variant stops waiting for it."""
        if status not in _DONE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(_DONE_STATUSES)}, got {status!r}")
        key = TrialKey(*key)
        trial = self._trial(key)
        trial.status, trial.reason = status, reason
        return self._advance(key.variant)

    def _trial(self, key: TrialKey) -> _Trial:
        key = TrialKey(str(key[0]), int(key[1]))
        if key not in self._trials:
            self._trials[key] = _Trial()
            self._stats.setdefault(key.variant, [])
        return self._trials[key]

    # -- epoch completion ------------------------------------------------------------------------------------

    def _variant_trials(self, variant: str) -> dict[int, _Trial]:
        return {k.seed: t for k, t in self._trials.items() if k.variant == variant}

    def _next_epoch(self, variant: str, trials: dict[int, _Trial]) -> int:
        done = self._stats[variant]
        if done:
            return done[-1].epoch + 1
        first = [min(t.reports) for t in trials.values() if t.reports and t.status != "failed"]
        return min(first, default=1)

    def _ready(self, epoch: int, trials: dict[int, _Trial]) -> bool:
        included = [t for t in trials.values() if t.status != "failed"]
        running_caught_up = all(t.last_epoch >= epoch for t in included if t.status == "running")
        return running_caught_up and any(t.last_epoch >= epoch for t in included)

    def _advance(self, variant: str) -> list[EpochStats]:
        """Summarise every epoch of ``variant`` that has become complete, in order."""
        trials = self._variant_trials(variant)
        new: list[EpochStats] = []
        epoch = self._next_epoch(variant, trials)
        while self._ready(epoch, trials):
            reports = {s: t.report_at(epoch) for s, t in trials.items() if t.status != "failed"}
            reports = {s: r for s, r in reports.items() if r is not None}
            previous = self._stats[variant][-1] if self._stats[variant] else None
            stats = compute_epoch_stats(variant, epoch, self.criterion, reports, previous)
            self._stats[variant].append(stats)
            new.append(stats)
            epoch += 1
        return new

    # -- queries -------------------------------------------------------------------------------------------

    def variants(self) -> list[str]:
        return sorted(self._stats)

    def history(self, variant: str) -> list[EpochStats]:
        """Every summarised epoch of ``variant``, oldest first."""
        return list(self._stats.get(variant, []))

    def latest(self, variant: str) -> EpochStats | None:
        stats = self._stats.get(variant)
        return stats[-1] if stats else None

    def trial_status(self, key: TrialKey) -> tuple[TrialStatus, str]:
        trial = self._trials[TrialKey(*key)]
        return trial.status, trial.reason

    def seed_should_stop(self, key: TrialKey) -> bool:
        """Whether the trial's latest report carries a stop reason (Algorithm 1 runs inside each trial)."""
        trial = self._trials.get(TrialKey(*key))
        return bool(trial and trial.reports and trial.reports[trial.last_epoch].stop_reason)

    def experiment_should_stop(self) -> str | None:
        """A reason to stop every trial, once every variant's consensus held ``patience`` epochs at
        ``agreement`` >= the threshold in its latest stats; ``None`` otherwise or when switched off."""
        if not self.experiment_stop or self.patience <= 0 or not self._stats:
            return None
        reasons = []
        for variant in self.variants():
            stats = self.latest(variant)
            if stats is None or stats.consensus_genotype is None:
                return None
            if stats.consensus_stable_for < self.patience or stats.agreement < self.agreement:
                return None
            reasons.append(
                f"{variant}: consensus held {stats.consensus_stable_for} epochs at agreement "
                f"{stats.agreement:.2f} (>= {self.agreement:.2f})"
            )
        return "; ".join(reasons)

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview: per variant, per seed final genotypes and status, the last consensus, and the
        agreement history ``[epoch, agreement, consensus_stable_for, mean_kendall_tau]``."""
        return {
            "criterion": self.criterion,
            "patience": self.patience,
            "agreement_threshold": self.agreement,
            "experiment_stop_reason": self.experiment_should_stop(),
            "variants": {variant: self._variant_summary(variant) for variant in self.variants()},
        }

    def _variant_summary(self, variant: str) -> dict[str, Any]:
        last = self.latest(variant)
        seeds = {}
        for seed, trial in sorted(self._variant_trials(variant).items()):
            report = trial.reports.get(trial.last_epoch)
            seeds[str(seed)] = {
                "status": trial.status,
                "reason": trial.reason,
                "last_epoch": trial.last_epoch,
                "genotypes": dict(report.genotypes) if report else {},
                "stop_reason": report.stop_reason if report else None,
            }
        return {
            "seeds": seeds,
            "last_epoch": last.epoch if last else None,
            "n_seeds": last.n_seeds if last else 0,
            "modal_genotype": last.modal_genotype if last else None,
            "consensus_genotype": last.consensus_genotype if last else None,
            "agreement": last.agreement if last else None,
            "consensus_stable_for": last.consensus_stable_for if last else 0,
            "mean_kendall_tau": last.mean_kendall_tau if last else None,
            "criterion_consensus": dict(last.criterion_consensus) if last else {},
            "criterion_agreement": dict(last.criterion_agreement) if last else {},
            "history": [
                [s.epoch, s.agreement, s.consensus_stable_for, s.mean_kendall_tau] for s in self._stats[variant]
            ],
        }

    # -- persistence ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: every stored report, trial status, and the stats already emitted
        (kept rather than recomputed so counters and emitted epochs survive exactly)."""
        return {
            "version": _STATE_VERSION,
            "criterion": self.criterion,
            "trials": [{"variant": k.variant, "seed": k.seed, **t.to_json()} for k, t in sorted(self._trials.items())],
            "stats": {v: [s.to_json() for s in stats] for v, stats in sorted(self._stats.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this coordinator's history with ``state``; the stop settings stay those of the constructor.

        A different watched criterion is refused: the stored stats and counters were computed under it.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported coordinator state version {state.get('version')!r}")
        if state["criterion"] != self.criterion:
            raise ValueError(
                f"saved coordinator state watches criterion {state['criterion']!r}, not {self.criterion!r}"
            )
        self._trials = {TrialKey(t["variant"], int(t["seed"])): _Trial.from_json(t) for t in state["trials"]}
        self._stats = {v: [EpochStats.from_json(s) for s in stats] for v, stats in state["stats"].items()}
        for key in self._trials:
            self._stats.setdefault(key.variant, [])
