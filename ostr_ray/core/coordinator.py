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

Memory is O(seeds), not O(seeds x epochs): a trial keeps only the reports the statistics may still need (its
newest report at or below the variant's next epoch to summarise, and every later one, each with its
:class:`~ostr_ray.core.consensus.SeedTerms` made on arrival, so the report completing an epoch of 1,000 seeds
only adds up arrays), each variant its latest
:class:`EpochStats` and one history row per epoch; everything else goes to a :mod:`.journal` (on disk in a
launch, see :meth:`Coordinator.use_journal`), read back for the history views. :meth:`Coordinator.compact_state`
is what Tune checkpoints (the retained reports as records, whose arrays pickle in binary: 1,000 DARTS trials in
~0.2 s, where their JSON form took ~1.5 s of the driver's loop at every experiment checkpoint);
:meth:`Coordinator.state_dict` the full history (``history.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ostr_ray.core.consensus import EpochStats, SeedTerms, compute_epoch_stats
from ostr_ray.core.criteria import DEFAULT_CRITERION, get_criterion
from ostr_ray.core.events import EpochReport
from ostr_ray.core.journal import Journal, MemoryJournal
from ostr_ray.core.summaries import LaunchSummary, SeedSummary, TrialStatus, VariantSummary

_DONE_STATUSES = ("finished", "stopped", "failed")
_STATE_VERSION = 1
"""The full state (``history.json``): every report and every epoch's stats."""
_COMPACT_VERSION = 2
"""The compact state (Tune's checkpoint): what the statistics need; the rest is in the journal."""

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
    """The reports the statistics may still need: the newest at or below the variant's next epoch to summarise
    and every later one (the rest are in the journal)."""
    terms: dict[int, SeedTerms] = field(default_factory=dict)
    """Per retained report, what it contributes to the statistics (made on arrival, never persisted)."""
    last_epoch: int = 0
    first_epoch: int = 0
    """The first epoch it ever reported (0: none yet), where its variant's first summary starts."""

    @property
    def latest(self) -> EpochReport | None:
        return self.reports.get(self.last_epoch)

    def store(self, report: EpochReport, watched: str | None = None) -> None:
        """Keep ``report`` and its :class:`SeedTerms`, computed now for the ``watched`` criterion when given
        (a live report); a restored one computes them when an epoch first needs them."""
        epoch = int(report.epoch)
        self.reports[epoch] = report
        terms = SeedTerms(report)
        self.terms[epoch] = terms.prepare(watched) if watched else terms
        self.last_epoch = max(self.last_epoch, epoch)
        self.first_epoch = min(self.first_epoch or epoch, epoch)

    def terms_at(self, epoch: int) -> SeedTerms | None:
        """The latest report up to ``epoch`` (what this seed believed at that point of the search), as the
        :class:`SeedTerms` the statistics read."""
        epochs = [e for e in self.reports if e <= epoch]
        return self.terms[max(epochs)] if epochs else None

    def forget_before(self, epoch: int) -> None:
        """Keep only what :meth:`terms_at` of ``epoch`` (the variant's next epoch to summarise) and later epochs
        can return: once a seed has reported that epoch, its earlier report is the journal's alone."""
        if len(self.reports) < 2:
            return  # the common case, at every epoch's completion for each of 1,000 trials: nothing to drop
        floor = max((e for e in self.reports if e <= epoch), default=None)
        for old in [e for e in self.reports if floor is not None and e < floor]:
            del self.reports[old], self.terms[old]

    def header(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason}

    def retained(self) -> list[EpochReport]:
        return [self.reports[e] for e in sorted(self.reports)]


# ------------------------------------------------------------------------------------------- Coordinator


class Coordinator:
    """Collects every trial's epoch reports; turns each completed epoch of a variant into :class:`EpochStats`.

    ``criterion`` is the watched criterion; ``patience`` > 0 with ``experiment_stop`` enables the experiment
    stop once every variant's consensus held ``patience`` epochs with ``agreement`` >= the threshold.
    ``variant_criteria`` / ``variant_patience`` override both per variant (variants from different presets).
    """

    def __init__(
        self,
        criterion: str = DEFAULT_CRITERION,
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
        self._variants: dict[str, dict[int, _Trial]] = {}
        self._latest: dict[str, EpochStats] = {}
        self._rows: dict[str, list[list[Any]]] = {}
        """variant -> per summarised epoch ``[epoch, agreement, consensus_stable_for, mean_kendall_tau]``."""
        self.journal: Journal = MemoryJournal()

    def use_journal(self, journal: Journal, *, keep: bool = False) -> None:
        """Keep the past in ``journal`` from now on (a launch's :class:`~ostr_ray.core.journal.DiskJournal`).

        A coordinator that has seen no report yet clears it (what an earlier driver left there is no part of
        this launch), unless ``keep``: a restored checkpoint's compact state is about to say what it holds.
        """
        if not keep and not any(t.last_epoch for t in self._trials.values()):
            journal.clear()
        self.journal = journal

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
        self.journal.add_report(key.variant, key.seed, report)
        trial.store(report, self.criterion_of(key.variant))
        if trial.status == "failed":
            trial.status, trial.reason = "running", ""
        new = self._advance(key.variant)
        if not new and key.variant in self._latest:
            trial.forget_before(self._latest[key.variant].epoch + 1)
        return new

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
            self._trials[key] = self._variants.setdefault(key.variant, {})[key.seed] = _Trial()
            self._rows.setdefault(key.variant, [])
        return self._trials[key]

    # -- epoch completion ------------------------------------------------------------------------------------

    def _variant_trials(self, variant: str) -> dict[int, _Trial]:
        return self._variants.get(variant, {})

    def _next_epoch(self, variant: str, trials: dict[int, _Trial]) -> int:
        if variant in self._latest:
            return self._latest[variant].epoch + 1
        first = [t.first_epoch for t in trials.values() if t.first_epoch and t.status != "failed"]
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
            terms = {s: t.terms_at(epoch) for s, t in trials.items() if t.status != "failed"}
            reports = {s: r for s, r in terms.items() if r is not None}
            stats = compute_epoch_stats(variant, epoch, self.criterion_of(variant), reports, self._latest.get(variant))
            self._add_stats(stats)
            new.append(stats)
            epoch += 1
        if new:
            for trial in trials.values():
                trial.forget_before(new[-1].epoch + 1)
        return new

    def _add_stats(self, stats: EpochStats) -> None:
        self.journal.add_stats(stats)
        self._latest[stats.variant] = stats
        self._rows.setdefault(stats.variant, []).append(
            [stats.epoch, stats.agreement, stats.consensus_stable_for, stats.mean_kendall_tau]
        )

    # -- queries -------------------------------------------------------------------------------------------

    def variants(self) -> list[str]:
        return sorted(self._rows)

    def history(self, variant: str) -> list[EpochStats]:
        """Every summarised epoch of ``variant``, oldest first (read back from the journal)."""
        return [EpochStats.from_json(s) for s in self.journal.stats_dicts(variant)]

    def latest(self, variant: str) -> EpochStats | None:
        return self._latest.get(variant)

    def trial_status(self, key: TrialKey) -> tuple[TrialStatus, str]:
        trial = self._trials[TrialKey(*key)]
        return trial.status, trial.reason

    def seed_should_stop(self, key: TrialKey) -> bool:
        """Whether the trial's latest report carries a stop reason (Algorithm 1 runs inside each trial)."""
        trial = self._trials.get(TrialKey(*key))
        return bool(trial and trial.latest and trial.latest.stop_reason)

    def experiment_should_stop(self) -> str | None:
        """A reason to stop every trial, once every variant's consensus held its ``patience`` epochs at
        ``agreement`` >= the threshold in its latest stats; ``None`` otherwise or when switched off (also
        when a variant's patience is 0: that variant runs its whole schedule)."""
        if not self.experiment_stop or not self._rows:
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
            report = trial.latest
            seeds[seed] = SeedSummary(
                status=trial.status,
                reason=trial.reason,
                last_epoch=trial.last_epoch,
                genotypes={c: g for c, g in report.genotypes.items() if g} if report else {},
                stop_reason=report.stop_reason if report else None,
            )
        history = [list(row) for row in self._rows[variant]]
        last = self.latest(variant)
        criterion = self.criterion_of(variant)
        space = next((t.latest.space for t in self._variant_trials(variant).values() if t.latest), None)
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
        """Every stored epoch report of a trial, oldest first (read back from the journal)."""
        key = TrialKey(*key)
        if key not in self._trials:
            return []
        return [EpochReport.from_json(r) for r in self.journal.report_dicts(key.variant, key.seed)]

    # -- persistence ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume and to read the launch back: every report and trial status, and the stats
        already emitted (kept rather than recomputed so counters and emitted epochs survive exactly); the
        journal's whole content, so its size grows with seeds x epochs (``history.json``)."""
        trials = [
            {"variant": k.variant, "seed": k.seed, **t.header(), "reports": self.journal.report_dicts(*k)}
            for k, t in sorted(self._trials.items())
        ]
        return {
            **self._settings(_STATE_VERSION),
            "trials": trials,
            "stats": {v: self.journal.stats_dicts(v) for v in self.variants()},
        }

    def compact_state(self) -> dict[str, Any]:
        """What the statistics need to go on (O(seeds): each trial's retained reports, each variant's latest
        stats and history rows); Tune checkpoints this, the journal keeps the rest.

        The reports are the retained :class:`EpochReport` records themselves (not copies: Tune pickles the state
        at once), since building their JSON form costs ~1.3 ms a DARTS report; :meth:`load_state_dict` takes
        either form."""
        trials = [
            {"variant": k.variant, "seed": k.seed, "first_epoch": t.first_epoch, **t.header(), "reports": t.retained()}
            for k, t in sorted(self._trials.items())
        ]
        return {
            **self._settings(_COMPACT_VERSION),
            "trials": trials,
            "stats": {v: [self._latest[v].to_json()] if v in self._latest else [] for v in self.variants()},
            "rows": {v: [list(r) for r in self._rows[v]] for v in self.variants()},
        }

    def _settings(self, version: int) -> dict[str, Any]:
        return {
            "version": version,
            "criterion": self.criterion,
            "variant_criteria": dict(sorted(self.variant_criteria.items())),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Coordinator:
        """A coordinator rebuilt from :meth:`state_dict` (``history.json``) to read a finished launch's history."""
        coordinator = cls(
            criterion=state.get("criterion") or DEFAULT_CRITERION,
            experiment_stop=False,
            variant_criteria=state.get("variant_criteria") or {},
        )
        coordinator.load_state_dict(state)
        return coordinator

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this coordinator's history with ``state``; the stop settings stay those of the constructor.

        A full state (:meth:`state_dict`) refills the journal; a compact one (:meth:`compact_state`) trusts the
        journal to hold the rest already (the launch's own, on disk). A different watched criterion is refused:
        the stored stats and counters were computed under it.
        """
        version = state.get("version")
        if version not in (_STATE_VERSION, _COMPACT_VERSION):
            raise ValueError(f"unsupported coordinator state version {version!r}")
        self._check_criteria(state)
        self._trials, self._variants, self._latest, self._rows = {}, {}, {}, {}
        if version == _STATE_VERSION:
            self.journal.clear()
        for data in state["trials"]:
            key = TrialKey(data["variant"], int(data["seed"]))
            trial = self._trial(key)
            trial.status, trial.reason = data["status"], data["reason"]
            for raw in data["reports"]:
                report = raw if isinstance(raw, EpochReport) else EpochReport.from_json(raw)
                trial.store(report)
                if version == _STATE_VERSION:
                    self.journal.add_report(key.variant, key.seed, report)
            trial.first_epoch = int(data.get("first_epoch") or trial.first_epoch)
        for variant, stats in state["stats"].items():
            self._rows[variant] = [list(r) for r in (state.get("rows") or {}).get(variant, [])]
            for raw in stats:
                if version == _STATE_VERSION:
                    self._add_stats(EpochStats.from_json(raw))
                else:
                    self._latest[variant] = EpochStats.from_json(raw)
        for variant, latest in self._latest.items():
            for trial in self._variant_trials(variant).values():
                trial.forget_before(latest.epoch + 1)

    def _check_criteria(self, state: dict[str, Any]) -> None:
        saved = {**dict.fromkeys(state["stats"], state["criterion"]), **(state.get("variant_criteria") or {})}
        for variant, criterion in [("every variant", state["criterion"]), *saved.items()]:
            if criterion != self.criterion_of(variant):
                raise ValueError(
                    f"saved coordinator state watches criterion {criterion!r} for {variant!r}, "
                    f"not {self.criterion_of(variant)!r}"
                )
