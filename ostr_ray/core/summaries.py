"""The shape of a multi-seed search's summary: per seed how it ended, per variant the consensus so far.

:meth:`~ostr_ray.core.coordinator.Coordinator.summary` makes a :class:`LaunchSummary`; the launch's snapshot
and report (:mod:`ostr_ray.experiment.records`) extend it, and every view (console tables, ``status``,
``report``, MLflow, retraining) reads these typed records. The JSON form is the one release 0.1 wrote
(seed keys as strings), so its files still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ostr_ray.core.criteria import DEFAULT_CRITERION

TrialStatus = Literal["running", "finished", "stopped", "failed"]


@dataclass
class SeedSummary:
    """How one seed's trial stands: its status, last epoch and the genotype of every criterion."""

    status: TrialStatus = "running"
    reason: str = ""
    last_epoch: int = 0
    genotypes: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "last_epoch": self.last_epoch,
            "genotypes": dict(self.genotypes),
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SeedSummary:
        return cls(
            status=data.get("status", "finished"),
            reason=data.get("reason") or "",
            last_epoch=int(data.get("last_epoch") or 0),
            genotypes={c: g for c, g in (data.get("genotypes") or {}).items() if g},
            stop_reason=data.get("stop_reason"),
        )


@dataclass
class VariantSummary:
    """One variant (a group of seeds of one space and preset) at its latest summarised epoch."""

    seeds: dict[int, SeedSummary] = field(default_factory=dict)
    criterion: str | None = None
    """The criterion this variant's consensus watches (None in release 0.1 files: the launch's)."""
    space: str | None = None
    """The search space of the variant's seeds (None in release 0.1 files: see the launch spec)."""
    last_epoch: int | None = None
    n_seeds: int = 0
    modal_genotype: str | None = None
    consensus_genotype: str | None = None
    agreement: float | None = None
    consensus_stable_for: int = 0
    mean_kendall_tau: float | None = None
    criterion_consensus: dict[str, str | None] = field(default_factory=dict)
    criterion_agreement: dict[str, float] = field(default_factory=dict)
    history: list[list[Any]] = field(default_factory=list)
    """Per summarised epoch: ``[epoch, agreement, consensus_stable_for, mean_kendall_tau]``."""

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["seeds"] = {str(seed): s.to_json() for seed, s in sorted(self.seeds.items())}
        out["criterion_consensus"] = dict(self.criterion_consensus)
        out["criterion_agreement"] = dict(self.criterion_agreement)
        out["history"] = [list(row) for row in self.history]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantSummary:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["seeds"] = {int(s): SeedSummary.from_json(v) for s, v in (data.get("seeds") or {}).items()}
        values["consensus_stable_for"] = int(values.get("consensus_stable_for") or 0)
        values["criterion_consensus"] = dict(values.get("criterion_consensus") or {})
        values["criterion_agreement"] = dict(values.get("criterion_agreement") or {})
        values["history"] = [list(row) for row in values.get("history") or []]
        return cls(**values)


@dataclass
class LaunchSummary:
    """Every variant of a multi-seed search and the stop settings its consensus is judged by."""

    criterion: str = DEFAULT_CRITERION
    """The watched criterion: consensus, agreement and the stop rules refer to it."""
    patience: int = 0
    agreement_threshold: float = 0.8
    experiment_stop_reason: str | None = None
    variants: dict[str, VariantSummary] = field(default_factory=dict)

    def summary_json(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "patience": self.patience,
            "agreement_threshold": self.agreement_threshold,
            "experiment_stop_reason": self.experiment_stop_reason,
            "variants": {v: s.to_json() for v, s in self.variants.items()},
        }

    @staticmethod
    def summary_values(data: dict[str, Any]) -> dict[str, Any]:
        """The :class:`LaunchSummary` fields of a JSON mapping (for this class and its subclasses)."""
        return {
            "criterion": data.get("criterion") or DEFAULT_CRITERION,
            "patience": int(data.get("patience") or 0),
            "agreement_threshold": float(data.get("agreement_threshold", 0.8)),
            "experiment_stop_reason": data.get("experiment_stop_reason"),
            "variants": {v: VariantSummary.from_json(s) for v, s in (data.get("variants") or {}).items()},
        }
