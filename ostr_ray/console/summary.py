"""A launch's summary as rich tables: what ``launch`` prints at its end and ``report`` / ``status`` show."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ostr_ray.console.format import first_metric, short_genotype
from ostr_ray.core.criteria import criterion_label, list_criteria
from ostr_ray.core.summaries import LaunchSummary, VariantSummary


def _with_truth(genotype: str | None, truth: dict[str, float] | None, space: str | None) -> Text:
    if not genotype:
        return Text("-")
    text = Text(short_genotype(genotype, limit=200, space=space))
    value = first_metric(truth)
    if value is not None:
        text.append(f"  {value:.2f}", style="green")
    return text


def shown_criteria(data: VariantSummary) -> list[str]:
    """Every criterion some seed has a genotype of: registered ones in registry order, then any others."""
    present = {c for s in data.seeds.values() for c in s.genotypes}
    return [c for c in list_criteria() if c in present] + sorted(present - set(list_criteria()))


def variant_table(variant: str, data: VariantSummary, truth: dict[str, Any]) -> Table:
    """One row per seed, one line per criterion: status, epochs, criterion, compact genotype and (with an NB201
    table) its ground truth, so the table stays within 100 columns however many criteria are registered."""
    table = Table(title=escape(variant), show_lines=True)
    for column in ("seed", "status", "epochs", "criterion", "genotype"):
        table.add_column(column, justify="right" if column in ("seed", "epochs") else "left", overflow="fold")
    seeds_truth = truth.get("seeds") or {}
    if seeds_truth:
        table.add_column("truth", justify="right", style="green")
    criteria = shown_criteria(data)
    for seed, info in sorted(data.seeds.items()):
        per_criterion = [
            short_genotype(info.genotypes[c], 200, data.space) if info.genotypes.get(c) else "-" for c in criteria
        ]
        row = [str(seed), info.status, str(info.last_epoch), "\n".join(map(criterion_label, criteria)) or "-"]
        row.append("\n".join(per_criterion) or "-")
        if seeds_truth:
            values = [first_metric(seeds_truth.get(str(seed), {}).get(c)) for c in criteria]
            row.append("\n".join("-" if v is None else f"{v:.2f}" for v in values))
        table.add_row(*(Text(cell) for cell in row))
    return table


def _consensus_text(summary: LaunchSummary, data: VariantSummary, truth: dict[str, Any]) -> Text:
    criterion = data.criterion or summary.criterion
    text = Text.assemble(("consensus", "bold"), f" ({criterion_label(criterion)}): ")
    text.append_text(_with_truth(data.consensus_genotype, truth.get("consensus"), data.space))
    tau = data.mean_kendall_tau
    text.append(
        f"\nagreement {data.agreement or 0:.2f}, stable for {data.consensus_stable_for} epochs, "
        f"mean Kendall tau {'-' if tau is None else f'{tau:.2f}'}"
    )
    return text


def launch_summary_table(
    summary: LaunchSummary,
    *,
    stop_reason: str | None = None,
    ground_truth: dict[str, Any] | None = None,
    trial_hours: float | None = None,
) -> Group:
    """One table per variant (seeds x criteria, NB201 ground truth in green) and the consensus lines."""
    parts: list[Any] = []
    for variant, data in summary.variants.items():
        truth = (ground_truth or {}).get(variant, {})
        parts.append(variant_table(variant, data, truth))
        parts.append(_consensus_text(summary, data, truth))
    footer = f"stop: {stop_reason or '-'}"
    if trial_hours is not None:
        footer += f"   search cost: {trial_hours:.3f} trial-hours"
    parts.append(Text(footer))
    return Group(*parts)


def report_table(report: Any) -> Group:
    """:func:`launch_summary_table` of a :class:`~ostr_ray.experiment.LaunchReport`."""
    return launch_summary_table(
        report,
        stop_reason=report.stop_reason,
        ground_truth=report.ground_truth,
        trial_hours=report.search_cost_trial_hours,
    )
