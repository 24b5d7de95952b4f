"""The evidence as tables: one :class:`TableSpec` per table of a variant, rendered as markdown or rich.

The tables read the JSON-ready dict of :func:`ostr_ray.evidence.analysis.analyse_variant`; what each column
means is written out in :mod:`ostr_ray.evidence.analysis`. Criteria are named by their registered labels and
the baseline comparison by the registry's baseline criterion. rich is imported only in :func:`render_rich`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ostr_ray.console.format import compact
from ostr_ray.core.criteria import criterion_label
from ostr_ray.evidence.evaluation import evaluation_tables
from ostr_ray.evidence.stats import baseline_criterion, has_nb201_cells


@dataclass
class TableSpec:
    """A rendered-agnostic table: title, header, string rows, and a footnote."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _pm(stat: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "-"
    return f"{stat['mean']:.{digits}f} ± {_num(stat.get('std'), digits)}"


def _label(crit: str) -> str:
    return criterion_label(crit)


def _short(cell: str | None) -> str:
    if not cell:
        return "-"
    return compact(cell)


def _cell_type_order(cell_types: Any) -> list[str]:
    """Cell types sorted with ``normal`` first."""
    return sorted(cell_types, key=lambda t: (t != "normal", t))


def _table_i(data: Mapping[str, Any]) -> TableSpec | None:
    """Table I: every ground-truth metric of the final cells and of the consensus cell, cost, stop epochs."""
    if not data.get("table_i"):
        return None
    metrics = data["metrics"]
    optimal = data.get("optimal")
    rows = []
    for row in data["table_i"]:
        stops = ",".join(str(e) for _, e in sorted(row["stop_epochs"].items(), key=lambda kv: int(kv[0])))
        rows.append(
            [
                _label(row["criterion"]),
                str(row["n"]),
                *[_pm(row["metrics"][m]) for m in metrics],
                *[_num(row["consensus"][m]) for m in metrics],
                _num(row["cost_trial_hours"], 3),
                stops,
            ]
        )
    note = (
        "consensus = the criterion's consensus cell; cost = trial time of the search (shared by all criteria); "
        "stop epochs = each seed's last epoch, in seed order."
    )
    if optimal:
        rows.append(["optimal", "-", *[_num(optimal[m]["value"]) for m in metrics], *["-"] * len(metrics), "-", ""])
        note += " optimal = each column's best cell in the benchmark table."
    return TableSpec(
        "Table I: ground truth of the final cells (mean ± std over seeds)",
        ["criterion", "seeds", *metrics, *[f"consensus {m}" for m in metrics], "cost (trial-h)", "stop epochs"],
        rows,
        note,
    )


def _baseline_name() -> str:
    """The baseline criterion the ``= DARTS cell`` column compares with (the registry's; magnitude)."""
    return baseline_criterion() or "(no baseline criterion registered)"


def _same_as_magnitude(r: Mapping[str, Any]) -> str:
    return "-" if r["same_as_magnitude"] is None else f"{r['same_as_magnitude']}/{r['n']}"


def _table_v(data: Mapping[str, Any]) -> TableSpec:
    """Table V: the selection ablation, primary metric and structure columns."""
    rows = [
        [
            _label(r["criterion"]),
            _pm(r),
            f"{_num(r['best']['value'])} (s{r['best']['seed']})" if r["best"] else "-",
            f"{_num(r['worst']['value'])} (s{r['worst']['seed']})" if r["worst"] else "-",
            f"{r['n_consensus']}/{r['n']}",
            str(r["n_distinct"]),
            _num(r["pair_agreement"]),
            _same_as_magnitude(r),
        ]
        for r in data["table_v"]
    ]
    return TableSpec(
        f"Table V: selection ablation on the same supernets ({data.get('metric')})",
        [
            "criterion",
            "mean ± std",
            "best (seed)",
            "worst (seed)",
            "= consensus",
            "distinct",
            "pair agreement",
            "= DARTS cell",
        ],
        rows,
        "= consensus: seeds whose final cell is the criterion's consensus cell; distinct: different final "
        "cells; pair agreement: share of seed pairs with equal cells; = DARTS cell: seeds whose cell equals "
        f"the same seed's {_baseline_name()} cell.",
    )


def _agreement_table(data: Mapping[str, Any]) -> TableSpec:
    """Without ground truth, Table V's structure columns alone."""
    rows = [
        [
            _label(r["criterion"]),
            _num(r["agreement"]),
            f"{r['n_consensus']}/{r['n']}",
            str(r["n_distinct"]),
            _num(r["pair_agreement"]),
            _same_as_magnitude(r),
        ]
        for r in data["structure"]
    ]
    return TableSpec(
        "Agreement of the final cells across seeds",
        ["criterion", "agreement", "= consensus", "distinct", "pair agreement", "= DARTS cell"],
        rows,
        "agreement: share of seeds holding the most common final cell.",
    )


def _selection_table(data: Mapping[str, Any]) -> TableSpec | None:
    """Table V with ground truth, else the agreement table; ``None`` without either."""
    if data.get("table_v"):
        return _table_v(data)
    if data.get("structure"):
        return _agreement_table(data)
    return None


def _table_vi(data: Mapping[str, Any]) -> TableSpec | None:
    """Table VI: stability over seeds and over epochs (needs the history or the ground truth)."""
    stab = data.get("stability") or []
    if not (stab and (data.get("has_history") or data.get("table_i"))):
        return None
    rows = [
        [
            _label(r["criterion"]),
            _num(r["final_std"]),
            _num(r["late_std"]),
            _pm(r["changes"]),
            _pm(r["settled_epoch"], 1),
        ]
        for r in stab
    ]
    return TableSpec(
        f"Table VI: stability ({data.get('metric') or 'no ground truth'})",
        ["criterion", "final std", "2nd-half std", "genotype changes", "settled at epoch"],
        rows,
        "final std: std over seeds of the final cells' accuracy; 2nd-half std: per seed, std of the per-epoch "
        "cells' accuracy over the last ceil(n/2) epochs, averaged over seeds; changes: epochs whose cell "
        "differs from the previous epoch's; settled: first epoch from which the cell stays final.",
    )


def _spearman_table(data: Mapping[str, Any]) -> TableSpec | None:
    """Figure 12's summary: single-edge Spearman rho per criterion."""
    spear = (data.get("spearman") or {}).get("criteria") or {}
    if not spear:
        return None
    rows = [
        [
            _label(c),
            _pm(s),
            _num(s["positive_share"]),
            _num(s["best_op_share"]),
            f"{s['n']} (+{s['n_undefined']} undefined)",
        ]
        for c, s in spear.items()
    ]
    return TableSpec(
        "Figure 12: Spearman rho, final-epoch scores vs single-edge neighbourhood ground truth",
        ["criterion", "rho mean ± std", "share rho > 0", "best-op share", "seed-edge pairs"],
        rows,
        "reference cell: each criterion's own final cell; neighbourhood: the 4 non-'none' ops on one edge, "
        "other edges kept.",
    )


def _param_free_table(data: Mapping[str, Any]) -> TableSpec | None:
    """Parameter-free ops of the final cells per cell type, with the eval networks' size when measured."""
    pf = data.get("param_free_final") or {}
    if not pf:
        return None
    cell_types = _cell_type_order({t for v in pf.values() for t in v})
    cost = (data.get("eval_cost") or {}).get("criteria") or {}
    size = (data.get("eval_cost") or {}).get("size") or {}
    header = ["criterion", *[f"param-free ({t})" for t in cell_types]]
    if cost:
        header += ["params (M)", "MAdds (M)"]
    rows = []
    for crit in data["criteria"]:
        row = [_label(crit), *[_pm(pf.get(crit, {}).get(t)) for t in cell_types]]
        if cost:
            row += [_pm(cost[crit]["params_m"], 3), _pm(cost[crit]["madds_m"], 1)]
        rows.append(row)
    note = "parameter-free ops counted in each final cell (mean ± std over seeds)"
    if cost:
        note += f"; eval network NetworkCIFAR C={size.get('C')}, {size.get('layers')} cells, 32x32, no aux head"
    return TableSpec("Final cells: parameter-free ops" + (", size" if cost else ""), header, rows, note)


def _finals_table(data: Mapping[str, Any]) -> TableSpec | None:
    """Each seed's final cell per criterion (with its primary-metric ground truth), and the consensus cells."""
    finals = data.get("finals") or {}
    if not finals:
        return None
    criteria = data["criteria"]
    metric = data.get("metric")
    stops = data.get("stops") or {}
    truth_of = {r["criterion"]: r["metrics"][metric]["values"] for r in data.get("table_i") or []}
    rows = []
    for seed in sorted(finals, key=int):
        row = [seed, str(stops.get(seed, {}).get("last_epoch", "-"))]
        for crit in criteria:
            text = _short(finals[seed].get(crit))
            value = truth_of.get(crit, {}).get(seed)
            row.append(text + (f" ({_num(value)})" if value is not None else ""))
        rows.append(row)
    consensus = data.get("consensus") or {}
    rows.append(["consensus", "", *[_short(consensus.get(c)) for c in criteria]])
    return TableSpec(
        f"Final cells per seed ({len(data['seeds'])} seeds)", ["seed", "epochs", *map(_label, criteria)], rows
    )


def _by_epoch_table(data: Mapping[str, Any]) -> TableSpec | None:
    """The data of Figures 9/10: per epoch, accuracy and parameter-free ops of the selected cells."""
    by_epoch = data.get("by_epoch") or {}
    if not by_epoch.get("epochs"):
        return None
    criteria = data["criteria"]
    acc = by_epoch.get("accuracy") or {}
    pfe = by_epoch.get("param_free") or {}
    types = _cell_type_order({t for v in pfe.values() for t in v})
    header = ["epoch", *[f"{_label(c)} {data.get('metric')}" for c in criteria if c in acc]]
    header += [f"{_label(c)} pf {t}" for c in criteria for t in types if c in pfe]
    rows = []
    for j, epoch in enumerate(by_epoch["epochs"]):
        row = [str(epoch)]
        row += [_pm({"mean": acc[c]["mean"][j], "std": acc[c]["std"][j]}) for c in criteria if c in acc]
        row += [
            _pm({"mean": pfe[c][t]["mean"][j], "std": pfe[c][t]["std"][j]}, 1)
            for c in criteria
            for t in types
            if c in pfe
        ]
        rows.append(row)
    return TableSpec(
        "Figures 9/10 data: accuracy and parameter-free ops of the selected cells by epoch (mean ± std)",
        header,
        rows,
    )


_TABLES = (
    _table_i,
    _selection_table,
    _table_vi,
    _spearman_table,
    _param_free_table,
    _finals_table,
    _by_epoch_table,
)
"""The table builders of a variant, in report order; each returns ``None`` when its data is missing."""


def variant_tables(data: Mapping[str, Any]) -> list[TableSpec]:
    """The tables of one variant, in report order."""
    return [spec for spec in (build(data) for build in _TABLES) if spec is not None]


def evaluation_specs(evaluation: Mapping[str, Any]) -> list[TableSpec]:
    """The tables of a launch's evaluation (``ostr-ray evaluate``): cells, and pairs of selectors."""
    return [TableSpec(*table) for table in evaluation_tables(evaluation)]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(spec: TableSpec) -> str:
    lines = [f"**{spec.title}**", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in spec.header) + " |")
    lines.append("|" + "|".join("---" for _ in spec.header) + "|")
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in spec.rows]
    if spec.note:
        lines += ["", f"_{spec.note}_"]
    return "\n".join(lines)


_NB201_NONE_TEXT = {
    "exclude": "'none' never selected (the authors' code)",
    "include": "'none' competes in the argmax (xautodl's DARTS baseline)",
}


def _decoder_text(decoder: Mapping[str, Any]) -> str:
    value = decoder["nb201_none"]
    text = f"`nb201_none: {value}`, {_NB201_NONE_TEXT.get(value, value)}"
    return text if decoder.get("recorded") else text + "; not recorded by this launch, which predates the setting"


def render_markdown(evidence: Mapping[str, Any]) -> str:
    """The whole evidence as markdown (what ``evidence.md`` holds and ``--format markdown`` prints)."""
    parts = [f"# Evidence: {evidence['name']}", ""]
    cost = evidence.get("search_cost_trial_hours")
    parts.append(f"- experiment: `{evidence['experiment_path']}`")
    if evidence.get("stop_reason"):
        parts.append(f"- stop: {evidence['stop_reason']}")
    if cost is not None:
        parts.append(f"- search cost (Tune, all trials): {cost:.3f} trial-hours")
    for note in evidence.get("notes") or []:
        parts.append(f"- note: {note}")
    for variant, data in evidence["variants"].items():
        parts += ["", f"## {variant} ({data['space']}, {len(data['seeds'])} seeds)", ""]
        if data.get("truth_source"):
            parts.append(f"- ground truth: `{data['truth_source']}`, primary metric `{data['metric']}`")
        elif has_nb201_cells(data["space"]):
            parts.append("- ground truth: none (no NB201 table)")
        if data.get("decoder"):
            parts.append(f"- NB201 decoder: {_decoder_text(data['decoder'])}")
        for seed, why in (data.get("excluded") or {}).items():
            parts.append(f"- seed {seed} left out: {why}")
        for spec in variant_tables(data):
            parts += ["", markdown_table(spec)]
    if evidence.get("evaluation"):
        parts += ["", "## Evaluation: the cells retrained from scratch", "", f"- `{evidence['evaluation']['path']}`"]
        parts += [line for spec in evaluation_specs(evidence["evaluation"]) for line in ("", markdown_table(spec))]
    if evidence.get("figures"):
        parts += ["", "## Figures", ""]
        parts += [f"![{Path(f).stem}]({Path(f).name})" for f in evidence["figures"]]
    return "\n".join(parts) + "\n"


def render_rich(evidence: Mapping[str, Any]) -> Any:
    """The same tables as rich renderables."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    for variant, data in evidence["variants"].items():
        head = f"[bold]{variant}[/] ({data['space']}, {len(data['seeds'])} seeds)"
        if data.get("truth_source"):
            head += f"  ground truth: {data['truth_source']} [{data['metric']}]"
        if data.get("decoder"):
            head += f"  decoder: nb201_none={data['decoder']['nb201_none']}"
        parts.append(Text.from_markup(head))
        parts += [_rich_table(spec) for spec in variant_tables(data)]
    if evidence.get("evaluation"):
        parts += [_rich_table(spec) for spec in evaluation_specs(evidence["evaluation"])]
    for note in evidence.get("notes") or []:
        parts.append(Text(f"note: {note}"))
    return Group(*parts)


def _rich_table(spec: TableSpec) -> Any:
    from rich.table import Table

    table = Table(title=spec.title, caption=spec.note or None, show_lines=False)
    for name in spec.header:
        table.add_column(name, overflow="fold")
    for row in spec.rows:
        table.add_row(*row)
    return table
