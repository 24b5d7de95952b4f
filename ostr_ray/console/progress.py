"""Terminal output for one in-process search: a rich progress bar and one line per epoch."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ostr_ray.console.format import first_metric, make_console, short_genotype
from ostr_ray.core.criteria import baseline_criteria
from ostr_ray.core.events import EpochReport, SearchResult


def epoch_line(report: EpochReport, criterion: str) -> str:
    """One epoch as rich markup: losses, throughput, and the baseline and watched criteria's genotypes."""
    parts = [
        f"[bold]epoch {report.epoch:>3}/{report.epochs}[/]",
        f"train {report.train_loss:.3f}/{100 * report.train_acc:.1f}%",
        f"val {report.val_loss:.3f}/{100 * report.val_acc:.1f}%",
        f"{report.images_per_s:,.0f} img/s",
    ]
    for crit in dict.fromkeys((*baseline_criteria(), criterion)):
        if crit in report.genotypes:
            truth = first_metric(report.ground_truth.get(crit))
            acc = f" [green]{truth:.2f}[/]" if truth is not None else ""
            genotype = escape(short_genotype(report.genotypes[crit], space=report.space))
            parts.append(f"{escape(crit)}={genotype}{acc} (stable {report.stable_for[crit]})")
    return "  ".join(parts)


class RichSearchProgress:
    """Search callback: epoch progress bar plus a per-epoch line; ``quiet`` prints plain lines only."""

    def __init__(
        self,
        total_epochs: int,
        criterion: str,
        *,
        start_epoch: int = 0,
        quiet: bool = False,
        console: Console | None = None,
    ) -> None:
        self.console = console or make_console(stderr=True)
        self.criterion = criterion
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold blue]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=quiet,
        )
        self.task = self.progress.add_task("search", total=total_epochs, completed=start_epoch)
        self.progress.start()

    def on_epoch_end(self, report: EpochReport, checkpoint_path: str | None) -> None:
        self.progress.console.print(epoch_line(report, self.criterion), highlight=False)
        self.progress.update(self.task, completed=report.epoch)

    def on_search_end(self, result: SearchResult) -> None:
        self.progress.stop()

    def close(self) -> None:
        self.progress.stop()
