"""The evidence's figures as PNG bytes: accuracy by epoch (Figure 9), parameter-free ops by epoch (Figure 10) and
the single-edge Spearman rho per edge (Figure 12).

matplotlib is imported only when a figure is made (its object-oriented API, no pyplot: no display needed).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from ostr_ray.core.criteria import list_criteria
from ostr_ray.evidence.render import _label, _num
from ostr_ray.evidence.stats import edge_name, parameter_free_set
from ostr_ray.experiment.layout import EVALUATION_FIGURE, EVIDENCE_FIGURES
from searchspaces.nb201_genotype import EDGES as NB201_EDGES


def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


_STYLES = (
    ("tab:blue", "-", "o"),
    ("tab:red", "--", "s"),
    ("tab:green", "-.", "^"),
    ("tab:purple", ":", "D"),
    ("tab:orange", "-", "v"),
    ("tab:brown", "--", "P"),
    ("tab:pink", "-.", "X"),
    ("tab:olive", ":", "*"),
)
"""Colour, dash and marker per criterion, by its place in the registry (magnitude blue, ostr red, ...), so a
criterion keeps its look in every figure and a newly registered one gets its own."""


def _style(crit: str) -> tuple[str | None, str, str]:
    registered = list_criteria()
    return _STYLES[registered.index(crit) % len(_STYLES)] if crit in registered else (None, "-", "o")


def _series(ax: Any, epochs: list[int], stats: Mapping[str, list[float]], crit: str) -> None:
    """Mean line and ±std band; criteria keep one colour, dash and marker so equal curves stay visible."""
    from matplotlib.ticker import MaxNLocator

    mean = np.array([np.nan if v is None else v for v in stats["mean"]], dtype=np.float64)
    std = np.array([np.nan if v is None else v for v in stats["std"]], dtype=np.float64)
    color, dash, marker = _style(crit)
    (line,) = ax.plot(epochs, mean, linestyle=dash, marker=marker, markersize=4, color=color, label=_label(crit))
    ax.fill_between(epochs, mean - std, mean + std, alpha=0.15, color=line.get_color())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _accuracy_figure(variants: Mapping[str, Any]) -> bytes | None:
    """Figure 9: ground truth of the selected cell by epoch, one panel per variant that has it."""
    from matplotlib.figure import Figure

    with_acc = [(v, d) for v, d in variants.items() if (d.get("by_epoch") or {}).get("accuracy")]
    if not with_acc:
        return None
    fig = Figure(figsize=(6.5, 3.6 * len(with_acc)), layout="constrained")
    for i, (variant, data) in enumerate(with_acc):
        ax = fig.add_subplot(len(with_acc), 1, i + 1)
        for crit, stats in data["by_epoch"]["accuracy"].items():
            _series(ax, data["by_epoch"]["epochs"], stats, crit)
        ax.set_title(f"{variant}: ground truth of the selected cell")
        ax.set_xlabel("search epoch")
        ax.set_ylabel(data["metric"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _figure_bytes(fig)


def _param_free_figure(variants: Mapping[str, Any]) -> bytes | None:
    """Figure 10: parameter-free ops of the selected cell by epoch, one panel per (variant, cell type)."""
    from matplotlib.figure import Figure

    panels = [
        (variant, cell_type, data)
        for variant, data in variants.items()
        for cell_type in sorted(
            {t for v in ((data.get("by_epoch") or {}).get("param_free") or {}).values() for t in v},
            key=lambda t: (t != "normal", t),
        )
    ]
    if not panels:
        return None
    fig = Figure(figsize=(6.5, 3.2 * len(panels)), layout="constrained")
    for i, (variant, cell_type, data) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for crit, per_type in data["by_epoch"]["param_free"].items():
            if cell_type in per_type:
                _series(ax, data["by_epoch"]["epochs"], per_type[cell_type], crit)
        free = ", ".join(sorted(parameter_free_set(data["space"])))
        ax.set_title(f"{variant} ({cell_type} cell): parameter-free ops ({free})", fontsize=9)
        ax.set_xlabel("search epoch")
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _figure_bytes(fig)


def _spearman_figure(variants: Mapping[str, Any]) -> bytes | None:
    """Figure 12: mean ± std over seeds of the single-edge Spearman rho, per edge and criterion."""
    from matplotlib.figure import Figure

    with_rho = [(v, d) for v, d in variants.items() if (d.get("spearman") or {}).get("criteria")]
    if not with_rho:
        return None
    fig = Figure(figsize=(7.5, 3.6 * len(with_rho)), layout="constrained")
    for i, (variant, data) in enumerate(with_rho):
        ax = fig.add_subplot(len(with_rho), 1, i + 1)
        crits = data["spearman"]["criteria"]
        width = 0.8 / len(crits)
        x = np.arange(len(NB201_EDGES))
        for k, (crit, summary) in enumerate(crits.items()):
            mean = np.array([np.nan if v is None else v for v in summary["per_edge"]["mean"]], dtype=np.float64)
            std = np.array([np.nan if v is None else v for v in summary["per_edge"]["std"]], dtype=np.float64)
            label = f"{_label(crit)} (mean {_num(summary['mean'])})"
            ax.bar(
                x + (k - (len(crits) - 1) / 2) * width,
                np.nan_to_num(mean),
                width,
                yerr=np.nan_to_num(std),
                color=_style(crit)[0],
                label=label,
                capsize=2,
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [edge_name(e) for e in range(len(NB201_EDGES))])
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{variant}: Spearman(score, single-edge neighbourhood {data['metric']})", fontsize=9)
        ax.set_xlabel("edge (to<-from) of each criterion's own final cell")
        ax.set_ylabel("rho (mean ± std over seeds)")
        ax.legend(fontsize=7)
    return _figure_bytes(fig)


def _evaluation_figure(evaluation: Mapping[str, Any] | None) -> bytes | None:
    """The retrained top-1 by selector group (``ostr-ray evaluate``): every run a point, the group's mean a bar."""
    groups = {g: v["top1"] for g, v in (evaluation or {}).get("groups", {}).items() if v["top1"]}
    if not groups:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.2 + 0.9 * len(groups), 3.2))
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0)
    for x, (group, values) in enumerate(groups.items()):
        color = _style(group)[0] or f"C{x % 10}"
        ax.scatter(x + jitter.uniform(-0.15, 0.15, len(values)), values, s=14, color=color, alpha=0.8)
        ax.hlines(float(np.mean(values)), x - 0.3, x + 0.3, color=color, linewidth=2)
    ax.set_xticks(range(len(groups)), [_label(g) if g in list_criteria() else g for g in groups], rotation=30)
    ax.set_ylabel("retrained test top-1 (%)")
    ax.set_title(f"{evaluation.get('protocol')}: every run (seed) a point", fontsize=9)
    return _figure_bytes(fig)


def make_figures(evidence: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes per figure file name; a figure whose data is missing everywhere is not made."""
    figures: dict[str, bytes] = {}
    png = _evaluation_figure(evidence.get("evaluation"))
    if png is not None:
        figures[EVALUATION_FIGURE] = png
    for key, draw in (
        ("accuracy", _accuracy_figure),
        ("param_free", _param_free_figure),
        ("spearman", _spearman_figure),
    ):
        png = draw(evidence["variants"])
        if png is not None:
            figures[EVIDENCE_FIGURES[key]] = png
    return figures
