"""The retrained comparison of a launch's cells (``ostr-ray evaluate``), as the report shows it.

Per cell: its selectors, parameters, multiply-adds, top-1 mean and std over its retraining seeds (population
std, ddof 0, as everywhere in this report) and, for NB201 cells with a table, the benchmark's accuracy. Per pair
of selector groups (``consensus``, each criterion, ``seeds``, ``random``, ``given``; groups that chose exactly
the same cells are one side, ``consensus = ostr``): the difference of their mean top-1 over every finished run
of the cells each group chose, with a 95% Welch interval (t with Welch-Satterthwaite degrees of freedom, sample
variances). The runs of one group's several cells (``seeds``,
``random:K``) are pooled as if independent, so that interval mixes cell-to-cell and seed-to-seed variation.
Under ``--scheduler asha`` the runs ASHA stopped early are listed with the epoch they stopped at and left out of
every mean (their top-1 is from fewer epochs); each cell says how many runs its mean is over.
Pure: reads the evaluation's records, no Ray or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ostr_ray.evidence.stats import mean_std
from ostr_ray.experiment import LaunchDirError
from ostr_ray.experiment.layout import EvaluationDir

INTERVAL = "95% Welch t interval"
LEVEL = 0.95
FINISHED, STOPPED_EARLY, FAILED, INTERRUPTED = "finished", "stopped early", "failed", "interrupted"
"""A run's status: it trained every epoch, ASHA stopped it (not a failure), it failed, or it has not ended."""


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict[str, float | None]:
    """``mean(a) - mean(b)`` with its Welch t interval; ``low``/``high``/``df`` are None when either side has
    fewer than two values or both have no spread (the interval is then undefined)."""
    from scipy.stats import t

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out: dict[str, float | None] = {"diff": float(x.mean() - y.mean()), "low": None, "high": None, "df": None}
    if len(x) < 2 or len(y) < 2:
        return out
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return out
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * se
    out.update(low=out["diff"] - half, high=out["diff"] + half, df=float(df))
    return out


def summarise(spec: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per cell and per pair of selector groups (see the module docstring), from the evaluation's spec and its
    runs' results (run name -> ``{cell, seed, status, test_top1, ...}``); only finished runs count."""
    top1: dict[str, list[float]] = {c["id"]: [] for c in spec["cells"]}
    planned: dict[str, int] = {}
    stopped = [_stopped_entry(name, run) for name, run in runs.items() if run.get("status") == STOPPED_EARLY]
    for run in runs.values():
        planned[run["cell"]] = planned.get(run["cell"], 0) + 1
        if run.get("status") == FINISHED and run.get("test_top1") is not None:
            top1.setdefault(run["cell"], []).append(float(run["test_top1"]))
    cells = []
    groups: dict[str, list[float]] = {}
    chose: dict[str, list[str]] = {}
    for cell in spec["cells"]:
        values = top1.get(cell["id"], [])
        mean, std = mean_std(values)
        cells.append(
            {
                "id": cell["id"],
                "genotype": cell["genotype"],
                "selectors": cell.get("selectors") or sorted({c["group"] for c in cell["credits"]}),
                "credits": [c["label"] for c in cell["credits"]],
                "params_m": cell["size"].get("params_m"),
                "mult_adds_m": cell["size"].get("mult_adds_m"),
                "top1": values,
                "top1_mean": mean,
                "top1_std": std,
                "runs": len(values),
                "runs_planned": planned.get(cell["id"], 0),
                "stopped_early": sum(1 for run in stopped if run["cell"] == cell["id"]),
                "benchmark": cell.get("benchmark"),
            }
        )
        for group in cells[-1]["selectors"]:
            groups.setdefault(group, []).extend(values)
            chose.setdefault(group, []).append(cell["id"])
    sides = _sides(groups, chose)
    pairs = [
        {"a": a, "b": b, "n_a": len(sides[a]), "n_b": len(sides[b]), **welch_interval(sides[a], sides[b])}
        for a, b in combinations(list(sides), 2)
    ]
    return {
        "cells": cells,
        "groups": {g: {"n": len(v), "mean": mean_std(v)[0], "top1": v} for g, v in groups.items()},
        "pairs": pairs,
        "interval": INTERVAL,
        "stopped": stopped,
    }


def _stopped_entry(name: str, run: Mapping[str, Any]) -> dict[str, Any]:
    """A run ASHA stopped: which, at which epoch, and its top-1 then."""
    epoch = run.get("stopped_at_epoch", run.get("epochs_done"))
    return {"run": name, "cell": run["cell"], "seed": run.get("seed"), "epoch": epoch, "top1": run.get("test_top1")}


def _sides(groups: Mapping[str, list[float]], chose: Mapping[str, list[str]]) -> dict[str, list[float]]:
    """The comparison's sides: groups that chose exactly the same cells are one side (``consensus = ostr``),
    since comparing a sample with itself says nothing; groups without a finished run are left out."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for group in groups:
        merged.setdefault(tuple(chose[group]), []).append(group)
    return {" = ".join(names): groups[names[0]] for names in merged.values() if groups[names[0]]}


def load_evaluation(launch_path: str | Path) -> dict[str, Any] | None:
    """The evaluation of the launch at ``launch_path`` (its settings, outcome and :func:`summarise`), or None
    when the launch has not been evaluated (or is remote)."""
    if "://" in str(launch_path):
        return None
    folder = EvaluationDir(launch_path)
    try:
        spec = folder.read_spec(required=False)
        report = folder.read_report(required=False)
    except LaunchDirError:
        return None
    if spec is None or report is None:
        return None
    config = spec.get("config", {})
    return {
        "path": folder.path,
        "outcome": report.get("outcome"),
        "protocol": config.get("protocol"),
        "epochs": config.get("epochs"),
        "dataset": spec.get("dataset"),
        "seeds": spec.get("seeds"),
        "space": spec.get("space"),
        "scheduler": spec.get("scheduler") or {},
        "runs": report.get("runs", {}),
        **summarise(spec, report.get("runs", {})),
    }


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _benchmark_value(bench: Mapping[str, float] | None) -> str:
    if not bench:
        return "-"
    key = next((k for k in bench if "test" in k and "acc" in k), None) or next(iter(bench))
    return f"{bench[key]:.2f} ({key})"


def evaluation_tables(evaluation: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """``(title, header, rows, note)`` of the cells table and the pairs table."""
    seeds = len(evaluation.get("seeds") or [])
    has_bench = any(c.get("benchmark") for c in evaluation["cells"])
    header = ["cell", "selectors", "params (M)", "mult-adds (M)", f"top-1 % (mean ± std, R={seeds})", "runs"]
    header += ["NB201 benchmark"] if has_bench else []
    rows = []
    for cell in evaluation["cells"]:
        row = [
            cell["id"],
            ", ".join(cell["credits"]),
            _num(cell["params_m"], 3),
            _num(cell["mult_adds_m"], 1),
            f"{_num(cell['top1_mean'])} ± {_num(cell['top1_std'])}",
            _runs_text(cell),
        ]
        rows.append(row + ([_benchmark_value(cell.get("benchmark"))] if has_bench else []))
    recipe = f"{evaluation.get('protocol')}, {evaluation.get('epochs')} epochs, {evaluation.get('dataset')}"
    title = f"Retrained cells: {recipe}"
    note = f"outcome {evaluation.get('outcome')}; std over retraining seeds (ddof 0)"
    stopped = evaluation.get("stopped") or []
    if stopped:
        note += (
            f"; {_scheduler_text(evaluation.get('scheduler') or {})}: means over the runs it let train every epoch "
            "(the survivors: a screening, biased upward, not the final comparison)"
        )
    pairs_rows = [
        [p["a"], p["b"], f"{p['n_a']} / {p['n_b']}", _num(p["diff"]), f"[{_num(p['low'])}, {_num(p['high'])}]"]
        for p in evaluation["pairs"]
    ]
    pairs = (
        "Selector pairs: difference of mean top-1 (a - b)",
        ["a", "b", "runs a / b", "diff (pp)", evaluation.get("interval", INTERVAL)],
        pairs_rows,
        "runs of a group's cells pooled; '-' where a side has fewer than two runs",
    )
    early = (
        f"Stopped early by {_scheduler_text(evaluation.get('scheduler') or {})}",
        ["run", "cell", "seed", "stopped at epoch", "top-1 % then"],
        [
            [s["run"], s["cell"], str(s["seed"]), f"{s['epoch']} of {evaluation.get('epochs')}", _num(s["top1"])]
            for s in stopped
        ],
        "not failures: ASHA stopped them for trailing at a rung; left out of the means above",
    )
    return [(title, header, rows, note), *([pairs] if pairs_rows else []), *([early] if stopped else [])]


def _runs_text(cell: Mapping[str, Any]) -> str:
    """How many runs the cell's mean is over; when fewer than planned, of how many, and how many ASHA stopped."""
    planned = cell.get("runs_planned", cell["runs"])
    if cell["runs"] >= planned:
        return str(cell["runs"])
    text = f"{cell['runs']} of {planned}"
    return text + (f" ({cell['stopped_early']} stopped early)" if cell.get("stopped_early") else "")


def _scheduler_text(scheduler: Mapping[str, Any]) -> str:
    if not scheduler:
        return "the scheduler"
    grace, factor, metric = scheduler["grace_period"], scheduler["reduction_factor"], scheduler["metric"]
    return f"ASHA (grace {grace}, reduction {factor:g}, on {metric})"
