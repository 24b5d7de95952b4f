"""The launch's live view: a rich table, one row per trial, and a consensus line per variant.

It is a listener of the coordinator callback (``on_trial_report`` / ``on_epoch_stats`` /
``on_trial_finished``), so it keeps only what it shows. For a user who is not watching (``--quiet``, or output
to a file or a pipe) it prints instead one plain, flushed line per (seed, epoch) and one per decision (a
consensus epoch, a seed stopped, finished or failed): a 40-minute launch writes as it goes, not at its end.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ostr_ray.console.format import make_console, short_genotype
from ostr_ray.core.coordinator import TrialKey
from ostr_ray.core.events import EpochReport

GENOTYPE_WIDTH = 48
"""A compact NB201 cell is 47 characters; longer (DARTS) genotypes are elided so the table fits 100 columns."""


def _eta(report: EpochReport) -> str:
    seconds = report.epoch_seconds * max(report.epochs - report.epoch, 0)
    return f"{seconds / 60:.1f}m" if seconds >= 60 else f"{seconds:.0f}s"


def _watched(report: EpochReport, criterion: str) -> str:
    return short_genotype(report.genotypes.get(criterion) or "(warm-up)", GENOTYPE_WIDTH, space=report.space)


class LaunchView:
    """Listener that renders the experiment's progress (a live table, or plain lines; see the module)."""

    def __init__(self, criterion: str, *, quiet: bool = False, console: Console | None = None) -> None:
        self.criterion = criterion
        self.console = console or make_console(stderr=True)
        self.quiet = quiet or not self.console.is_terminal
        self.reports: dict[TrialKey, EpochReport] = {}
        self.consensus: dict[str, Any] = {}
        self.waiting_line = ""
        """Trials waiting for resources, shown under the table while any wait (``on_trials_waiting``)."""
        self.live: Live | None = None
        if not self.quiet:
            self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.start()

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        self.console.file.flush()  # a log file or pipe shows each line as it happens

    def on_trial_report(self, key: TrialKey, report: EpochReport) -> None:
        self.reports[key] = report
        if self.quiet:
            self._line(
                f"{key.variant} seed {key.seed} epoch {report.epoch}/{report.epochs}: val {100 * report.val_acc:.1f}% "
                f"{self.criterion} {_watched(report, self.criterion)} "
                f"stable {report.stable_for.get(self.criterion, 0)}, {report.images_per_s:,.0f} img/s"
            )
            if report.stop_reason:
                self._line(f"{key.variant} seed {key.seed} stops: {report.stop_reason}")

    def on_epoch_stats(self, stats: Any) -> None:
        self.consensus[stats.variant] = stats
        if self.quiet:
            self._line(self._consensus_text(stats).plain)

    def on_trial_retried(self, key: TrialKey, cause: str, resumes_after: int) -> None:
        """One line whatever the view: a retry is news even on a terminal (the table only shows its effect)."""
        start = f"continues from epoch {resumes_after}" if resumes_after else "starts again"
        self._line(f"{cause}: {key.variant} seed {key.seed} {start}")

    def on_trials_waiting(self, count: int, line: str) -> None:
        """Trials wait for resources (``line`` says how many and what each asks for), or no longer do: a plain
        line, and on a terminal a line under the table while any wait."""
        self.waiting_line = line if count else ""
        if self.quiet:
            self._line(line)
        self.refresh()

    def on_trial_finished(self, key: TrialKey, status: str, reason: str = "") -> None:
        if self.quiet:
            self._line(f"{key.variant} seed {key.seed} {status}" + (f": {reason}" if reason else ""))

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
        for column in ("variant", "seed", "epoch", "val", f"{self.criterion} genotype", "stable", "img/s", "ETA"):
            table.add_column(column, justify="right" if column in ("seed", "epoch", "stable", "img/s") else "left")
        for key in sorted(self.reports):
            report = self.reports[key]
            table.add_row(
                key.variant,
                str(key.seed),
                f"{report.epoch}/{report.epochs}",
                f"{100 * report.val_acc:.1f}%",
                Text(_watched(report, self.criterion)),
                str(report.stable_for.get(self.criterion, 0)),
                f"{report.images_per_s:,.0f}",
                _eta(report),
            )
        lines = [self._consensus_text(s) for _, s in sorted(self.consensus.items())]
        waiting = [Text(self.waiting_line, style="yellow")] if self.waiting_line else []
        return Group(table, *lines, *waiting)

    def _consensus_text(self, stats: Any) -> Text:
        consensus = short_genotype(stats.consensus_genotype or "(warm-up)", GENOTYPE_WIDTH, space=stats.space)
        return Text.assemble(
            (stats.variant, "bold"),
            f" epoch {stats.epoch}: consensus {consensus}  agreement {stats.agreement:.2f}  "
            f"stable {stats.consensus_stable_for}",
        )
