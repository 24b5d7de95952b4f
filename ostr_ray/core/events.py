"""What the search core tells the outside world: one plain record per epoch, and a tiny callback interface.

The CLI's progress display, the Ray trial (``tune.report``) and the MLflow logger are all callbacks; the
core never imports them. Matrices travel as numpy arrays so a report pickles small and serialises to JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

Matrix = dict[str, np.ndarray]
"""cell type -> (E, O) array."""


@dataclass
class EpochReport:
    """One finished epoch of one seed's search."""

    epoch: int
    """Epochs completed so far (1-based)."""
    epochs: int
    seed: int
    space: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    w_lr: float
    a_lr: float
    arch_active: bool
    alphas: Matrix
    betas: Matrix
    scores: dict[str, Matrix]
    """score name (ostr, ostr_star, naive) -> cell type -> epoch mean."""
    stderr: dict[str, Matrix]
    genotypes: dict[str, str]
    """criterion -> genotype in the space's string form (empty before the architecture steps start)."""
    changed: dict[str, bool]
    stable_for: dict[str, int]
    decisiveness: dict[str, dict[str, list[float | None]]]
    """criterion -> cell type -> per edge (chosen - runner-up) / SE."""
    epoch_seconds: float
    images_per_s: float
    edge_weights: Matrix = field(default_factory=dict)
    """PC-DARTS edge-normalisation weights, cell type -> (E,); empty for other spaces."""
    ground_truth: dict[str, dict[str, float]] = field(default_factory=dict)
    """criterion -> NB201 table metric -> value, when a table was given."""
    stop_reason: str | None = None

    def scalars(self) -> dict[str, float]:
        """The flat numbers worth a metric series each (the matrices are logged as artifacts instead)."""
        out = {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "w_lr": self.w_lr,
            "a_lr": self.a_lr,
            "epoch_seconds": self.epoch_seconds,
            "images_per_s": self.images_per_s,
        }
        for crit, flag in self.changed.items():
            out[f"{crit}_changed"] = float(flag)
            out[f"{crit}_stable_for"] = float(self.stable_for[crit])
        for crit, metrics in self.ground_truth.items():
            for metric, value in metrics.items():
                out[f"{crit}_gt_{metric}"] = value
        return out

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochReport:
        data = dict(data)
        for key in ("alphas", "betas", "edge_weights"):
            data[key] = {c: np.asarray(m) for c, m in data[key].items()}
        for key in ("scores", "stderr"):
            data[key] = {s: {c: np.asarray(m) for c, m in cells.items()} for s, cells in data[key].items()}
        return cls(**data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class SearchResult:
    """How one seed's search ended."""

    seed: int
    space: str
    epochs_done: int
    final_genotypes: dict[str, str]
    stop_reason: str
    history: list[EpochReport]

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "space": self.space,
            "epochs_done": self.epochs_done,
            "final_genotypes": self.final_genotypes,
            "stop_reason": self.stop_reason,
            "history": [r.to_json() for r in self.history],
        }


class SearchCallback(Protocol):
    """Implement any subset; the loop calls what exists."""

    def on_epoch_end(self, report: EpochReport, checkpoint_path: str | None) -> None: ...

    def on_search_end(self, result: SearchResult) -> None: ...

    def on_search_failed(self, failure: Any) -> None:
        """A seed of a seed group diverged (:class:`~ostr_ray.core.search.SeedFailure`); the group goes on."""


def call(callbacks: list[Any], hook: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)
