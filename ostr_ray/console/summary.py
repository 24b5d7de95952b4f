"""The launch's closing summary as a rich table (also what ``ostr-ray report`` and ``status`` print)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ostr_ray.console.progress import short_genotype

SHOWN_CRITERIA = ("magnitude", "ostr", "ostr_star", "naive")


def _with_truth(genotype: str | None, truth: dict[str, float] | None) -> str:
    if not genotype:
        return "-"
    text = short_genotype(genotype, limit=200)
    if truth:
        return f"{text}  [green]{next(iter(truth.values())):.2f}[/]"
    return text


def variant_table(variant: str, data: dict[str, Any], truth: dict[str, Any]) -> Table:
    table = Table(title=f"{variant}", show_lines=True)
    table.add_column("seed", justify="right")
    table.add_column("status")
    table.add_column("epochs", justify="right")
    criteria = [c for c in SHOWN_CRITERIA if any(c in s.get("genotypes", {}) for s in data["seeds"].values())]
    for crit in criteria:
        table.add_column(crit, overflow="fold")
    for seed, seed_data in sorted(data["seeds"].items(), key=lambda kv: int(kv[0])):
        genotypes = seed_data.get("genotypes", {})
        seed_truth = truth.get("seeds", {}).get(seed, {})
        status = seed_data["status"] + (f": {seed_data['reason']}" if seed_data.get("reason") else "")
        table.add_row(
            seed,
            status,
            str(seed_data.get("last_epoch", 0)),
            *[_with_truth(genotypes.get(c), seed_truth.get(c)) for c in criteria],
        )
    return table


def launch_summary_table(report: dict[str, Any]) -> Group:
    """One table per variant (seeds x criteria, NB201 ground truth in green) and the consensus lines."""
    parts: list[Any] = []
    for variant, data in report.get("variants", {}).items():
        truth = report.get("ground_truth", {}).get(variant, {})
        parts.append(variant_table(variant, data, truth))
        consensus = _with_truth(data.get("consensus_genotype"), truth.get("consensus"))
        tau = data.get("mean_kendall_tau")
        parts.append(
            Text.from_markup(
                f"[bold]consensus[/] ({report.get('criterion', 'ostr')}): {consensus}\n"
                f"agreement {data.get('agreement') or 0:.2f}, stable for {data.get('consensus_stable_for', 0)} epochs, "
                f"mean Kendall tau {'-' if tau is None else f'{tau:.2f}'}"
            )
        )
    footer = f"stop: {report.get('stop_reason', '-')}"
    if "search_cost_trial_hours" in report:
        footer += f"   search cost: {report['search_cost_trial_hours']:.3f} trial-hours"
    parts.append(Text(footer))
    return Group(*parts)
