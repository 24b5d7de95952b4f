"""Pictures of a search for the MLflow record: alpha / beta / strength heatmaps, cell diagrams, agreement charts.

Everything is drawn on bare :class:`matplotlib.figure.Figure` objects (the Agg canvas, no ``pyplot``), so
nothing here touches matplotlib's global backend or figure registry: safe inside the launch driver, a
notebook, or a headless node. Cell diagrams are plain matplotlib (no graphviz dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ostr_ray.core.events import EpochReport
from searchspaces import SearchSpace, get_space

STRENGTH_SCORE = "ostr"
"""The score the "operation strength" panel shows (falls back to the first score a report carries)."""

CellPanels = Callable[[SearchSpace, str], list[tuple[str, Callable[[Axes], None]]]]
"""``(space, genotype text) -> [(panel title suffix, draw(ax)), ...]``: one panel per cell type."""
_CELL_DRAWERS: dict[str, CellPanels] = {}


def register_cell_drawer(kind: str) -> Callable[[CellPanels], CellPanels]:
    """Register the diagram of a cell layout; a space opts in with ``SearchSpace.cell_drawing = kind``."""

    def wrap(panels: CellPanels) -> CellPanels:
        _CELL_DRAWERS[kind] = panels
        return panels

    return wrap


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


# ------------------------------------------------------------------------------------------- heatmaps
def _darts_state(state: int) -> str:
    return {0: "$c_{k-2}$", 1: "$c_{k-1}$"}.get(state, f"n{state - 2}")


def _heatmap(ax: Axes, matrix: np.ndarray, rows: list[str], cols: list[str], title: str) -> None:
    """``cols`` are short op names already."""
    values = np.asarray(matrix, dtype=np.float64)
    image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(values.shape[1]), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(values.shape[0]), rows, fontsize=7)
    # Mark each edge's largest entry: what a plain argmax would choose.
    finite = np.where(np.isfinite(values), values, -np.inf)
    for row, col in enumerate(finite.argmax(axis=1)):
        ax.add_patch(_box(col, row))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)


def _box(col: int, row: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2)


def report_heatmaps(report: EpochReport, score: str = STRENGTH_SCORE) -> Figure:
    """One row per cell type, three panels: alpha, beta = softmax(alpha), and operation strength (edges x ops).

    The red box in each row marks the largest entry of that edge.
    """
    space = get_space(report.space)
    cells = [c for c in space.cell_types if c in report.alphas]
    score = score if score in report.scores else next(iter(report.scores), None)
    panels = [("alpha", report.alphas), ("beta", report.betas)]
    if score is not None:
        panels.append((f"strength ({score})", report.scores[score]))
    rows = space.row_labels()
    fig = Figure(figsize=(4.2 * len(panels), 0.28 * space.num_edges * len(cells) + 1.6 * len(cells)))
    axes = np.atleast_2d(fig.subplots(len(cells), len(panels), squeeze=False))
    for i, cell in enumerate(cells):
        for j, (name, matrices) in enumerate(panels):
            _heatmap(axes[i, j], matrices[cell], rows, [space.short_op(op) for op in space.ops], f"{cell}: {name}")
    fig.suptitle(f"seed {report.seed}, epoch {report.epoch}/{report.epochs} ({space.name})", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- cell diagrams
def _node(ax: Axes, xy: tuple[float, float], text: str, color: str = "#dbe9f6") -> None:
    ax.text(
        *xy,
        text,
        ha="center",
        va="center",
        fontsize=8,
        zorder=3,
        bbox={"boxstyle": "circle,pad=0.35", "facecolor": color, "edgecolor": "#333333"},
    )


def _arrow(
    ax: Axes,
    src: tuple[float, float],
    dst: tuple[float, float],
    label: str,
    rad: float,
    *,
    color: str = "#555555",
    label_at: float = 0.5,
) -> None:
    """A curved (``arc3``) arrow, its label on the curve at ``label_at`` (0 = source, 1 = destination)."""
    ax.annotate(
        "",
        xy=dst,
        xytext=src,
        zorder=1,
        arrowprops={
            "arrowstyle": "-|>",
            "color": color,
            "lw": 1.1,
            "shrinkA": 11,
            "shrinkB": 11,
            "connectionstyle": f"arc3,rad={rad}",
        },
    )
    if label:
        # the quadratic Bezier matplotlib's arc3 draws: control point = chord midpoint + rad * (dy, -dx)
        (x0, y0), (x2, y2) = src, dst
        cx, cy = (x0 + x2) / 2 + rad * (y2 - y0), (y0 + y2) / 2 - rad * (x2 - x0)
        t = label_at
        x = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x2
        y = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y2
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=6.5,
            zorder=2,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )


def _bare(ax: Axes, title: str) -> None:
    ax.set_axis_off()
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(title, fontsize=8)


def draw_nb201_cell(ax: Axes, space: SearchSpace, genotype: str, title: str = "") -> None:
    """NB201's 4-node cell, nodes in a row (0 = input, 3 = output): neighbour edges straight, the two
    skip-one edges arcing above, 0→3 arcing below; 'none' edges are left out."""
    from searchspaces.nb201_genotype import EDGES

    ops = space.parse_genotype(genotype).ops
    position = {node: (1.4 * node, 0.0) for node in range(4)}
    for (dst, src), op in zip(EDGES, ops):
        if op == "none":
            continue
        rad = {1: 0.0, 2: -0.55, 3: 0.4}[dst - src]
        _arrow(ax, position[src], position[dst], space.short_op(op), rad)
    for node, xy in position.items():
        _node(ax, xy, str(node), "#f6e3c6" if node in (0, 3) else "#dbe9f6")
    ax.set_xlim(-0.4, 4.6)
    ax.set_ylim(-1.2, 1.2)
    _bare(ax, title)


def draw_darts_cell(
    ax: Axes, space: SearchSpace, pairs: Sequence[tuple[str, int]], concat: Sequence[int], title: str = ""
) -> None:
    """A DARTS cell: inputs c_{k-2}, c_{k-1} on the left, the four nodes in a column (each reading two
    states; node-to-node edges bulge to the right), the output c_{k} = concat of the nodes on the right."""
    position = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for node in range(4):
        position[node + 2] = (2.8, 2.4 - 1.6 * node)
    out = (5.2, 0.0)
    for state in concat:
        _arrow(ax, position[state], out, "", 0.0, color="#c8c8c8")
    for k, (op, inp) in enumerate(pairs):
        node = k // 2 + 2
        if inp < 2:  # from an input: a straight edge, labelled near its node so the fan stays readable
            _arrow(ax, position[inp], position[node], space.short_op(op), 0.0, label_at=0.7)
        else:  # from an earlier node in the column: an arc to the right, wider for longer jumps
            _arrow(ax, position[inp], position[node], space.short_op(op), -0.35 - 0.05 * (node - inp))
    _node(ax, position[0], _darts_state(0), "#f6e3c6")
    _node(ax, position[1], _darts_state(1), "#f6e3c6")
    for node in range(4):
        _node(ax, position[node + 2], str(node))
    _node(ax, out, "$c_{k}$", "#d5ecd4")
    ax.set_xlim(-0.6, 5.8)
    ax.set_ylim(-3.0, 3.0)
    _bare(ax, title)


@register_cell_drawer("nb201")
def _nb201_panels(space: SearchSpace, text: str) -> list[tuple[str, Callable[[Axes], None]]]:
    return [("", lambda ax, title="": draw_nb201_cell(ax, space, text, title))]


@register_cell_drawer("darts")
def _darts_panels(space: SearchSpace, text: str) -> list[tuple[str, Callable[[Axes], None]]]:
    genotype = space.parse_genotype(text)
    return [
        (
            cell,
            lambda ax, title="", cell=cell: draw_darts_cell(
                ax, space, getattr(genotype, cell), getattr(genotype, f"{cell}_concat"), title
            ),
        )
        for cell in ("normal", "reduce")
    ]


def _text_panels(space: SearchSpace, text: str) -> list[tuple[str, Callable[[Axes], None]]]:
    """The fallback for a space without a registered diagram: its compact genotype as text."""

    def draw(ax: Axes, title: str = "") -> None:
        ax.text(0.5, 0.5, f"{title}\n{space.compact(text)}", ha="center", va="center", fontsize=7, wrap=True)

    return [("", draw)]


def cell_figure(space_name: str, genotypes: Mapping[str, str]) -> Figure:
    """Diagrams of several genotypes of one space (e.g. per criterion, or per seed), one row each, drawn by
    the space's registered cell diagram (one panel per cell type); single-panel cells wrap into 3 columns."""
    space = get_space(space_name)
    panels_of = _CELL_DRAWERS.get(space.cell_drawing or "", _text_panels)
    items = [(name, panels_of(space, text)) for name, text in genotypes.items() if text]
    per_item = max((len(p) for _, p in items), default=1)
    n = max(len(items), 1)
    cols = per_item if per_item > 1 else min(3, n)
    nrows = n if per_item > 1 else -(-n // cols)
    fig = Figure(figsize=(4.6 * cols, (3.6 if per_item > 1 else 2.3) * nrows + 0.3))
    axes = np.atleast_2d(fig.subplots(nrows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    if not items:
        axes[0, 0].text(0.5, 0.5, "no genotype yet", ha="center", va="center")
    for i, (name, panels) in enumerate(items):
        for j, (suffix, draw) in enumerate(panels):
            ax = axes[i, j] if per_item > 1 else axes[i // cols, i % cols]
            draw(ax, f"{name}: {suffix}" if suffix else name)
    fig.tight_layout()
    return fig


def seed_grid(space_name: str, seed_genotypes: Mapping[Any, str], criterion: str = "") -> Figure:
    """Every seed's final cell (one criterion), for the parent run: do the seeds agree by eye?"""
    suffix = f" ({criterion})" if criterion else ""
    return cell_figure(space_name, {f"seed {seed}{suffix}": g for seed, g in seed_genotypes.items()})


# ------------------------------------------------------------------------------------------- parent chart
def agreement_chart(history: Sequence[Sequence[Any]], title: str = "") -> Figure:
    """``history`` rows ``[epoch, agreement, consensus_stable_for, mean_kendall_tau]`` (the coordinator's
    summary form): agreement and tau on the left axis, the consensus' stable-for count on the right."""
    rows = [list(r) for r in history]
    epochs = [r[0] for r in rows]
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    ax.plot(epochs, [r[1] for r in rows], "o-", color="tab:blue", label="agreement")
    taus = [(r[0], r[3]) for r in rows if len(r) > 3 and r[3] is not None]
    if taus:
        ax.plot(*zip(*taus), "s--", color="tab:green", label="mean Kendall tau")
    ax.set_ylim(-1.05 if any(t < 0 for _, t in taus) else 0.0, 1.05)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("agreement / tau")
    right = ax.twinx()
    right.step(epochs, [r[2] for r in rows], where="mid", color="tab:orange", label="consensus stable for")
    right.set_ylabel("consensus stable for (epochs)")
    right.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower right")
    ax.set_title(title or "cross-seed agreement", fontsize=9)
    fig.tight_layout()
    return fig
