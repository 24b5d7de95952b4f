"""The multi-seed coordinator: collects every trial's epoch reports and turns each completed epoch of a
variant into :class:`~ostr_ray.core.consensus.EpochStats`; the experiment-level stop rule.

This is the pure core that a Ray Tune ``Callback`` (feeding :meth:`Coordinator.update` /
:meth:`Coordinator.mark_finished`, persisting :meth:`Coordinator.state_dict`) and a ``Stopper`` (asking
:meth:`Coordinator.seed_should_stop` / :meth:`Coordinator.experiment_should_stop`) wrap. It imports neither
Ray nor MLflow so it can be tested with hand-made :class:`~ostr_ray.core.events.EpochReport` records and reused
by any other scheduler.

Trials are keyed by ``(variant, seed)``; variants (e.g. ``"nb201-cifar10"``) are independent groups and every
statistic is per variant. Trials run asynchronously, so epoch ``k`` of a variant is summarised only once
every still-running trial of that variant has reported epoch ``k``: finished or stopped trials contribute
their last report up to ``k`` (a seed that stopped early keeps voting with its final genotype), failed trials
are left out. Each epoch's :class:`EpochStats` is computed exactly once and never revised, which is what keeps
re-reported (retried) epochs from being counted twice and makes the stability counters well defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ostr_ray.core.consensus import EpochStats, compute_epoch_stats
from ostr_ray.core.criteria import get_criterion
from ostr_ray.core.events import EpochReport
from ostr_ray.core.summaries import LaunchSummary, SeedSummary, TrialStatus, VariantSummary

_DONE_STATUSES = ("finished", "stopped", "failed")
_STATE_VERSION = 1

__all__ = ["Coordinator", "EpochStats", "TrialKey", "TrialStatus"]


class TrialKey(NamedTuple):
    """One trial: a variant (an independent group of seeds) and the seed within it."""

    variant: str
    seed: int


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
    ``variant_criteria`` / ``variant_patience`` override both per variant (variants from different presets).
    """

    def __init__(
        self,
        criterion: str = "ostr",
        patience: int = 0,
        agreement: float = 0.8,
        experiment_stop: bool = True,
        *,
        variant_criteria: Mapping[str, str] | None = None,
        variant_patience: Mapping[str, int] | None = None,
    ) -> None:
        self.variant_criteria = dict(variant_criteria or {})
        self.variant_patience = dict(variant_patience or {})
        for name in {criterion, *self.variant_criteria.values()}:
            get_criterion(name)  # fail at construction, not at the first completed epoch
        if min(patience, *self.variant_patience.values(), 0) < 0:
            raise ValueError(f"patience must be >= 0, got {patience} ({self.variant_patience})")
        if not 0.0 <= agreement <= 1.0:
            raise ValueError(f"agreement threshold must be in [0, 1], got {agreement}")
        self.criterion = criterion
        self.patience = patience
        self.agreement = agreement
        self.experiment_stop = experiment_stop
        self._trials: dict[TrialKey, _Trial] = {}
        self._stats: dict[str, list[EpochStats]] = {}

    # -- feeding -------------------------------------------------------------------------------------------

    def criterion_of(self, variant: str) -> str:
        return self.variant_criteria.get(variant, self.criterion)

    def patience_of(self, variant: str) -> int:
        return self.variant_patience.get(variant, self.patience)

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
            stats = compute_epoch_stats(variant, epoch, self.criterion_of(variant), reports, previous)
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
        """A reason to stop every trial, once every variant's consensus held its ``patience`` epochs at
        ``agreement`` >= the threshold in its latest stats; ``None`` otherwise or when switched off (also
        when a variant's patience is 0: that variant runs its whole schedule)."""
        if not self.experiment_stop or not self._stats:
            return None
        reasons = []
        for variant in self.variants():
            stats, patience = self.latest(variant), self.patience_of(variant)
            if patience <= 0 or stats is None or stats.consensus_genotype is None:
                return None
            if stats.consensus_stable_for < patience or stats.agreement < self.agreement:
                return None
            reasons.append(
                f"{variant}: consensus held {stats.consensus_stable_for} epochs at agreement "
                f"{stats.agreement:.2f} (>= {self.agreement:.2f})"
            )
        return "; ".join(reasons)

    def summary(self) -> LaunchSummary:
        """Per variant, per seed final genotypes and status, the last consensus, and the agreement history."""
        return LaunchSummary(
            criterion=self.criterion,
            patience=self.patience,
            agreement_threshold=self.agreement,
            experiment_stop_reason=self.experiment_should_stop(),
            variants={variant: self._variant_summary(variant) for variant in self.variants()},
        )

    def _variant_summary(self, variant: str) -> VariantSummary:
        seeds = {}
        for seed, trial in sorted(self._variant_trials(variant).items()):
            report = trial.reports.get(trial.last_epoch)
            seeds[seed] = SeedSummary(
                status=trial.status,
                reason=trial.reason,
                last_epoch=trial.last_epoch,
                genotypes={c: g for c, g in report.genotypes.items() if g} if report else {},
                stop_reason=report.stop_reason if report else None,
            )
        history = [[s.epoch, s.agreement, s.consensus_stable_for, s.mean_kendall_tau] for s in self._stats[variant]]
        last = self.latest(variant)
        criterion = self.criterion_of(variant)
        spaces = [r.space for t in self._variant_trials(variant).values() for r in t.reports.values()]
        space = spaces[0] if spaces else None
        if last is None:
            return VariantSummary(seeds=seeds, criterion=criterion, space=space, history=history)
        return VariantSummary(
            seeds=seeds,
            criterion=criterion,
            space=last.space,
            last_epoch=last.epoch,
            n_seeds=last.n_seeds,
            modal_genotype=last.modal_genotype,
            consensus_genotype=last.consensus_genotype,
            agreement=last.agreement,
            consensus_stable_for=last.consensus_stable_for,
            mean_kendall_tau=last.mean_kendall_tau,
            criterion_consensus=dict(last.criterion_consensus),
            criterion_agreement=dict(last.criterion_agreement),
            history=history,
        )

    def trial_keys(self) -> list[TrialKey]:
        return sorted(self._trials)

    def trial_reports(self, key: TrialKey) -> list[EpochReport]:
        """Every stored epoch report of a trial, oldest first."""
        trial = self._trials.get(TrialKey(*key))
        return [trial.reports[e] for e in sorted(trial.reports)] if trial else []

    # -- persistence ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: every stored report, trial status, and the stats already emitted
        (kept rather than recomputed so counters and emitted epochs survive exactly)."""
        return {
            "version": _STATE_VERSION,
            "criterion": self.criterion,
            "variant_criteria": dict(sorted(self.variant_criteria.items())),
            "trials": [{"variant": k.variant, "seed": k.seed, **t.to_json()} for k, t in sorted(self._trials.items())],
            "stats": {v: [s.to_json() for s in stats] for v, stats in sorted(self._stats.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Coordinator:
        """A coordinator rebuilt from :meth:`state_dict` (``history.json``) to read a finished launch's history."""
        coordinator = cls(
            criterion=state.get("criterion") or "ostr",
            experiment_stop=False,
            variant_criteria=state.get("variant_criteria") or {},
        )
        coordinator.load_state_dict(state)
        return coordinator

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this coordinator's history with ``state``; the stop settings stay those of the constructor.

        A different watched criterion is refused: the stored stats and counters were computed under it.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported coordinator state version {state.get('version')!r}")
        saved = {**dict.fromkeys(state["stats"], state["criterion"]), **(state.get("variant_criteria") or {})}
        for variant, criterion in [("every variant", state["criterion"]), *saved.items()]:
            if criterion != self.criterion_of(variant):
                raise ValueError(
                    f"saved coordinator state watches criterion {criterion!r} for {variant!r}, "
                    f"not {self.criterion_of(variant)!r}"
                )
        self._trials = {TrialKey(t["variant"], int(t["seed"])): _Trial.from_json(t) for t in state["trials"]}
        self._stats = {v: [EpochStats.from_json(s) for s in stats] for v, stats in state["stats"].items()}
        for key in self._trials:
            self._stats.setdefault(key.variant, [])
