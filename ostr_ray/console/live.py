"""The launch's live view: a rich table, one row per trial, and a consensus line per variant.

It is a listener of the coordinator callback (``on_trial_report`` / ``on_epoch_stats``), so it keeps only
what it shows; ``quiet=True`` prints one plain line per consensus epoch instead, for logs.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ostr_ray.console.format import short_genotype
from ostr_ray.core.coordinator import TrialKey
from ostr_ray.core.events import EpochReport


def _eta(report: EpochReport) -> str:
    seconds = report.epoch_seconds * max(report.epochs - report.epoch, 0)
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class LaunchView:
    """Listener that renders the experiment's progress."""

    def __init__(self, criterion: str, *, quiet: bool = False, console: Console | None = None) -> None:
        self.criterion = criterion
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.reports: dict[TrialKey, EpochReport] = {}
        self.consensus: dict[str, Any] = {}
        self.live: Live | None = None
        if not quiet:
            self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.start()

    def on_trial_report(self, key: TrialKey, report: EpochReport) -> None:
        self.reports[key] = report

    def on_epoch_stats(self, stats: Any) -> None:
        self.consensus[stats.variant] = stats
        if self.quiet:
            self.console.print(self._consensus_text(stats), highlight=False)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
            self.live = None

    def render(self) -> Group:
        table = Table(title="ostr-ray launch", expand=False)
        for column in (
            "variant",
            "seed",
            "epoch",
            "val acc",
            f"{self.criterion} genotype",
            "stable",
            "img/s",
            "ETA",
        ):
            table.add_column(column, justify="right" if column in ("seed", "epoch", "stable") else "left")
        for key in sorted(self.reports):
            report = self.reports[key]
            table.add_row(
                key.variant,
                str(key.seed),
                f"{report.epoch}/{report.epochs}",
                f"{100 * report.val_acc:.1f}%",
                short_genotype(report.genotypes.get(self.criterion, "(warm-up)"), 64, space=report.space),
                str(report.stable_for.get(self.criterion, 0)),
                f"{report.images_per_s:,.0f}",
                _eta(report),
            )
        lines = [self._consensus_text(s) for _, s in sorted(self.consensus.items())]
        return Group(table, *lines)

    def _consensus_text(self, stats: Any) -> Text:
        consensus = short_genotype(stats.consensus_genotype or "(warm-up)", 70, space=stats.space)
        return Text.assemble(
            (stats.variant, "bold"),
            f" epoch {stats.epoch}: consensus {consensus}  agreement {stats.agreement:.2f}  "
            f"stable {stats.consensus_stable_for}",
        )
