"""Every statistic of the evidence report: per seed, per edge, per variant, and for the whole launch.

Every criterion (``magnitude`` = DARTS, ``ostr``, ``ostr_star``, ``naive``) selects a cell from the *same*
supernets each epoch, so comparing criteria is an ablation of the selection rule alone.

Conventions used by every statistic below
-----------------------------------------
* **Seeds.** A variant's seeds are those in ``report.json``/``history.json``; seeds whose trial *failed* or that
  never produced a genotype are left out (listed under ``excluded``). Every "mean ± std" is over the included
  seeds, std being the population std (``ddof = STD_DDOF = 0``); NaN values (unknown cells) are ignored.
* **Final cell** of (seed, criterion): the genotype of the seed's last epoch report that carries one for that
  criterion (= ``report.json``'s per-seed genotype; without ``history.json`` that genotype is used).
* **Ground truth.** NB201 cells are looked up in an :class:`~ostr_ray.nb201_bench.NB201Table` (``--nb201-table``
  or the variant config's ``nb201_table``). Without a table, the accuracies the launch recorded itself
  (``report.json`` ``ground_truth`` and every epoch report's ``ground_truth``) are used where they cover a cell;
  the single-edge neighbourhood statistics need the table. The *primary metric* (figures, Table V/VI and the
  Spearman statistic) is ``metric`` if given, else the first table column whose name contains ``test``, else
  the first column; Table I shows every column.
* **Per-epoch curves** (Figures 9/10): at epoch ``e`` a seed contributes the cell of its latest report with
  epoch <= ``e`` (a seed that stopped early keeps its final cell, as in the coordinator); epochs run from 1 to
  the latest epoch of any seed. Mean and std are over the seeds that have a cell at that epoch.
* **Parameter-free ops** of a cell: its kept edges whose op is in ``space.parameter_free_ops`` minus ``'none'``
  (NB201: skip_connect, avg_pool_3x3; DARTS: skip_connect, max_pool_3x3, avg_pool_3x3), per cell type.

Tables (one row per criterion)
------------------------------
* **Table I** -- per metric: mean ± std of the final cells' ground truth; the criterion's consensus cell
  (``report.json`` ``criterion_consensus``, else the most common final cell, ties to the smallest string) and
  its ground truth; the search cost in trial-hours (``report.json``'s ``search_cost_trial_hours``, Tune's
  summed trial time, for a one-variant launch; for a launch of several variants the variant's own sum over
  its seeds of every epoch's ``epoch_seconds``, which the JSON also gives as ``epoch_trial_hours``); each
  seed's last epoch.
* **Table V** (selection ablation) -- primary-metric mean ± std; best and worst seed (value and seed);
  ``= consensus``: seeds whose final cell equals the consensus cell; ``distinct``: number of different final
  cells; ``pair agreement``: share of seed pairs with identical final cells; ``= DARTS``: seeds whose final
  cell equals *the same seed's* magnitude (DARTS) cell -- how often the selection rule alone changes the
  answer on the same supernet.
* **Table VI** (stability) -- ``final std``: std over seeds of the final cells' primary metric; ``2nd-half
  std``: for each seed, take its reports carrying a cell, in epoch order ``r_1..r_n``, keep the last
  ``ceil(n/2)`` (``r_{floor(n/2)+1}..r_n``), take the std (ddof 0) of their cells' primary metric, then average
  over seeds; ``changes``: per seed the number of ``i`` in ``2..n`` with ``cell(r_i) != cell(r_{i-1})`` (mean ±
  std over seeds); ``settled``: per seed the epoch of the first report from which every later report keeps
  the final cell (mean over seeds).
* **Figure 12** (single-edge Spearman) -- for each seed and criterion ``c`` the *reference* cell is ``c``'s own
  final cell. For each of its 6 edges the *single-edge neighbourhood* is the 4 cells obtained by putting each
  non-'none' op (skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3) on that edge and keeping the other
  five edges (the reference cell itself is one of the 4). ``rho`` is Spearman's correlation (average ranks
  for ties) between ``c``'s final-epoch scores of those 4 ops on that edge (magnitude: betas; ostr,
  ostr_star, naive: their score matrices, from the report whose cell is the final cell) and the 4 cells'
  primary-metric ground truth. A constant score or accuracy vector has no rho (counted as ``undefined``).
  Summary over all (seed, edge) pairs with a rho: mean ± std, share with rho > 0; ``best-op share`` is the
  share of (seed, edge) pairs whose chosen op gives the neighbourhood's highest accuracy.
* **DARTS / PC-DARTS** (no ground truth) -- per-criterion final cells per seed, agreement (share of seeds
  holding the most common final cell), parameter-free op counts (final and by epoch), and each final cell's
  evaluation network's parameters (M, without the auxiliary head) and multiply-adds (M, one 32x32 image,
  ``FlopCounterMode`` FLOPs / 2) at the DARTS CIFAR size ``C=36, layers=20`` unless told otherwise.

The tables are laid out in :mod:`ostr_ray.evidence.render`, the figures drawn in :mod:`ostr_ray.evidence.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ostr_ray.evidence.loading import (
    HISTORY_FILE,
    REPORT_FILE,
    EvidenceError,
    Experiment,
    GroundTruth,
    SeedRun,
    collect_seeds,
    load_experiment,
    recorded_truth,
    resolve_table_path,
)
from ostr_ray.evidence.stats import (
    CRITERIA,
    NB201_CANDIDATE_OPS,
    NB201_LIKE,
    STD_DDOF,
    count_param_free,
    edge_name,
    mean_std,
    modal,
    pair_agreement,
    selection_scores,
    single_edge_neighbourhood,
    spearman,
)
from searchspaces import get_space
from searchspaces.nb201_genotype import EDGES as NB201_EDGES
from searchspaces.nb201_genotype import OPS as NB201_OPS
from searchspaces.nb201_genotype import NB201Genotype

PAPER_EVAL_SIZE: dict[str, int] = {"C": 36, "layers": 20}
"""DARTS' CIFAR evaluation network (NetworkCIFAR) size for parameters and multiply-adds."""


# ============================================================================================ statistics


def epoch_matrix(
    runs: Sequence[SeedRun], criterion: str, value: Callable[[str], float]
) -> tuple[list[int], np.ndarray]:
    """Epochs ``1..E`` and a (seeds, E) array of ``value(cell_at(epoch))`` (NaN where a seed has no cell)."""
    last = max((int(r["epoch"]) for run in runs for r in run.reports), default=0)
    epochs = list(range(1, last + 1))
    out = np.full((len(runs), len(epochs)), np.nan)
    cache: dict[str, float] = {}
    for i, run in enumerate(runs):
        for j, epoch in enumerate(epochs):
            cell = run.cell_at(epoch, criterion)
            if cell:
                if cell not in cache:
                    cache[cell] = float(value(cell))
                out[i, j] = cache[cell]
    return epochs, out


def _column_stats(matrix: np.ndarray) -> dict[str, list[float]]:
    means, stds, counts = [], [], []
    for column in matrix.T:
        m, s = mean_std(column)
        means.append(m)
        stds.append(s)
        counts.append(int(np.isfinite(column).sum()))
    return {"mean": means, "std": stds, "n": counts}


def stability(run: SeedRun, criterion: str, value: Callable[[str], float] | None) -> dict[str, Any]:
    """One seed's Table VI numbers (see the module docstring): changes, settled epoch, 2nd-half std."""
    sel = run.selections(criterion)
    if not sel:
        return {"changes": None, "settled_epoch": None, "late_std": math.nan}
    cells = [c for _, c in sel]
    changes = sum(a != b for a, b in zip(cells, cells[1:]))
    k = len(cells) - 1
    while k > 0 and cells[k - 1] == cells[-1]:
        k -= 1
    late = cells[len(cells) // 2 :]
    late_std = math.nan
    if value is not None:
        values = np.array([value(c) for c in late], dtype=np.float64)
        if np.isfinite(values).all():
            late_std = float(values.std(ddof=STD_DDOF))
    return {"changes": changes, "settled_epoch": sel[k][0], "late_std": late_std}


@dataclass
class EdgeCorrelation:
    """Figure 12's unit: one edge of one seed's reference cell under one criterion."""

    seed: int
    criterion: str
    edge: int
    chosen: str
    ops: tuple[str, ...]
    scores: list[float]
    accuracies: list[float]
    rho: float

    @property
    def chosen_is_best(self) -> bool:
        accs = np.asarray(self.accuracies)
        if not np.isfinite(accs).all():
            return False
        return self.chosen in self.ops and accs[self.ops.index(self.chosen)] == accs.max()

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "edge": self.edge,
            "edge_name": edge_name(self.edge),
            "chosen": self.chosen,
            "ops": list(self.ops),
            "scores": self.scores,
            "accuracies": self.accuracies,
            "rho": self.rho,
            "chosen_is_best": self.chosen_is_best,
        }


def edge_correlations(
    cell: str, scores: np.ndarray, truth: GroundTruth, metric: str, *, seed: int = 0, criterion: str = ""
) -> list[EdgeCorrelation]:
    """For each of the 6 edges of ``cell``: scores of the 4 non-'none' ops (row of the (6, 5) ``scores``)
    against the ground truth of the single-edge neighbourhood, and their Spearman rho."""
    genotype = NB201Genotype.from_string(cell)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(NB201_EDGES), len(NB201_OPS)):
        raise ValueError(f"NB201 scores must be {(len(NB201_EDGES), len(NB201_OPS))}, got {scores.shape}")
    columns = [NB201_OPS.index(op) for op in NB201_CANDIDATE_OPS]
    out = []
    for edge in range(len(NB201_EDGES)):
        neighbours = single_edge_neighbourhood(genotype, edge)
        accs = [truth.value(c, metric) for _, c in neighbours]
        row = [float(v) for v in scores[edge, columns]]
        out.append(
            EdgeCorrelation(
                seed=seed,
                criterion=criterion,
                edge=edge,
                chosen=genotype.ops[edge],
                ops=NB201_CANDIDATE_OPS,
                scores=row,
                accuracies=accs,
                rho=spearman(row, accs) if np.isfinite(accs).all() else math.nan,
            )
        )
    return out


def summarise_correlations(records: Sequence[EdgeCorrelation]) -> dict[str, Any]:
    """mean ± std of rho over (seed, edge) pairs with one, share positive, best-op share, per-edge means."""
    rhos = np.array([r.rho for r in records], dtype=np.float64)
    finite = rhos[np.isfinite(rhos)]
    m, s = mean_std(finite)
    per_edge_mean, per_edge_std = [], []
    for edge in range(len(NB201_EDGES)):
        em, es = mean_std(r.rho for r in records if r.edge == edge)
        per_edge_mean.append(em)
        per_edge_std.append(es)
    return {
        "mean": m,
        "std": s,
        "positive_share": float((finite > 0).mean()) if finite.size else math.nan,
        "n": int(finite.size),
        "n_undefined": int(len(records) - finite.size),
        "best_op_share": float(np.mean([r.chosen_is_best for r in records])) if records else math.nan,
        "per_edge": {"mean": per_edge_mean, "std": per_edge_std},
        "edges": [r.to_json() for r in records],
    }


@lru_cache(maxsize=256)
def eval_cost(space: str, cell: str, C: int = 36, layers: int = 20, image_size: int = 32) -> dict[str, float]:
    """Parameters (M, without the auxiliary head) and multiply-adds (M, one ``image_size`` image) of the
    DARTS-style evaluation network of ``cell``; FLOPs from ``torch.utils.flop_counter`` halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sp = get_space(space)
    network = sp.build_eval_network(sp.parse_genotype(cell), C=C, layers=layers, auxiliary=False).eval()
    params = sum(p.numel() for name, p in network.named_parameters() if not name.startswith("auxiliary_head"))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 3, image_size, image_size))
    return {"params_m": params / 1e6, "madds_m": counter.get_total_flops() / 2 / 1e6}


# ============================================================================================ per variant


def _criteria(runs: Sequence[SeedRun]) -> list[str]:
    present = {c for run in runs for c in run.final}
    return [c for c in CRITERIA if c in present] + sorted(present - set(CRITERIA))


def _stat(values: Mapping[Any, float]) -> dict[str, Any]:
    m, s = mean_std(values.values())
    return {"mean": m, "std": s, "values": {str(k): v for k, v in values.items()}}


def _included(runs: Sequence[SeedRun]) -> tuple[list[SeedRun], dict[str, str]]:
    """The seeds the statistics use (not failed, with a final cell), and why each other seed is left out."""
    included = [r for r in runs if r.status != "failed" and r.final]
    kept = {r.seed for r in included}
    excluded = {
        str(r.seed): (f"failed: {r.reason}" if r.status == "failed" else "no genotype")
        for r in runs
        if r.seed not in kept
    }
    return included, excluded


def _final_cells(included: Sequence[SeedRun], crit: str) -> dict[int, str]:
    """seed -> ``crit``'s final cell, for the seeds that have one."""
    return {r.seed: r.final[crit] for r in included if crit in r.final}


def _consensus_cells(
    included: Sequence[SeedRun], criteria: Sequence[str], consensus: Mapping[str, str | None] | None
) -> dict[str, str | None]:
    """criterion -> its consensus cell: the given one, else the most common final cell."""
    consensus_cells = {}
    for crit in criteria:
        cells = [r.final[crit] for r in included if crit in r.final]
        consensus_cells[crit] = (consensus or {}).get(crit) or modal(cells)[0]
    return consensus_cells


def _structure(
    space: str, criteria: Sequence[str], included: Sequence[SeedRun], consensus_cells: Mapping[str, str | None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Agreement and Table V's counting columns per criterion, and the parameter-free ops of the final cells."""
    structure, param_free_final = [], {}
    magnitude = _final_cells(included, "magnitude")
    for crit in criteria:
        cells = _final_cells(included, crit)
        structure.append(
            {
                "criterion": crit,
                "n": len(cells),
                "agreement": modal(list(cells.values()))[1],
                "n_consensus": sum(c == consensus_cells[crit] for c in cells.values()),
                "n_distinct": len(set(cells.values())),
                "pair_agreement": pair_agreement([cells[s] for s in sorted(cells)]),
                "same_as_magnitude": sum(magnitude.get(s) == c for s, c in cells.items()) if magnitude else None,
            }
        )
        param_free_final[crit] = {
            t: _stat({s: count_param_free(space, c).get(t, 0) for s, c in cells.items()})
            for t in get_space(space).cell_types
        }
    return structure, param_free_final


def _selection_row(struct: Mapping[str, Any], primary: Mapping[str, Any]) -> dict[str, Any]:
    """Table V's row: the structure columns, the primary metric's mean ± std and its best and worst seed."""
    values = {s: v for s, v in primary["values"].items() if np.isfinite(v)}
    best = max(values, key=lambda s: (values[s], -int(s)), default=None)
    worst = min(values, key=lambda s: (values[s], int(s)), default=None)
    return {
        **struct,
        "mean": primary["mean"],
        "std": primary["std"],
        "best": {"seed": int(best), "value": values[best]} if best is not None else None,
        "worst": {"seed": int(worst), "value": values[worst]} if worst is not None else None,
    }


def _truth_tables(
    criteria: Sequence[str],
    structure: Sequence[Mapping[str, Any]],
    included: Sequence[SeedRun],
    truth: GroundTruth,
    primary: str,
    consensus_cells: Mapping[str, str | None],
    cost_hours: float | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tables I and V: the ground truth of the final cells and of the consensus cell, per criterion."""
    table_i, table_v = [], []
    for crit, struct in zip(criteria, structure):
        cells = _final_cells(included, crit)
        per_metric = {m: _stat({s: truth.value(c, m) for s, c in cells.items()}) for m in truth.metrics}
        cons = consensus_cells[crit]
        table_i.append(
            {
                "criterion": crit,
                "n": len(cells),
                "metrics": per_metric,
                "consensus_cell": cons,
                "consensus": {m: truth.value(cons, m) for m in truth.metrics},
                "cost_trial_hours": cost_hours,
                "stop_epochs": {str(r.seed): r.last_epoch for r in included},
            }
        )
        table_v.append(_selection_row(struct, per_metric[primary]))
    return table_i, table_v


def _stability_row(
    crit: str, included: Sequence[SeedRun], value: Callable[[str], float] | None, has_history: bool
) -> dict[str, Any]:
    """Table VI's row of one criterion (``value`` is the primary metric's ground truth, ``None`` without one)."""
    per_seed = {r.seed: stability(r, crit, value) for r in included} if has_history else {}
    changes = {s: v["changes"] for s, v in per_seed.items() if v["changes"] is not None}
    settled = {s: v["settled_epoch"] for s, v in per_seed.items() if v["settled_epoch"] is not None}
    late = {s: v["late_std"] for s, v in per_seed.items()}
    final_values = [value(c) for c in _final_cells(included, crit).values()] if value is not None else []
    return {
        "criterion": crit,
        "final_std": mean_std(final_values)[1] if value is not None else math.nan,
        "late_std": mean_std(late.values())[0] if late else math.nan,
        "late_std_per_seed": {str(s): v for s, v in late.items()},
        "changes": _stat(changes),
        "settled_epoch": _stat(settled),
    }


def _by_epoch(
    space: str, criteria: Sequence[str], included: Sequence[SeedRun], value: Callable[[str], float] | None
) -> dict[str, Any]:
    """Figures 9/10: per epoch, mean ± std over seeds of the selected cells' ground truth and parameter-free ops."""
    by_epoch: dict[str, Any] = {"accuracy": {}, "param_free": {}}
    cell_types = list(get_space(space).cell_types)
    by_epoch["epochs"] = list(range(1, max(int(r["epoch"]) for run in included for r in run.reports) + 1))
    for crit in criteria:
        if value is not None:
            by_epoch["accuracy"][crit] = _column_stats(epoch_matrix(included, crit, value)[1])
        by_epoch["param_free"][crit] = {
            t: _column_stats(epoch_matrix(included, crit, lambda c, t=t: count_param_free(space, c).get(t, 0))[1])
            for t in cell_types
        }
    return by_epoch


def _seed_correlations(run: SeedRun, crit: str, truth: GroundTruth, primary: str) -> list[EdgeCorrelation]:
    """Figure 12's records of one seed: ``crit``'s final-epoch normal-cell scores around its own final cell."""
    rep = run.final_report(crit)
    scores = selection_scores(rep, crit) if rep else None
    if rep is None or scores is None or "normal" not in scores:
        return []
    return edge_correlations(rep["genotypes"][crit], scores["normal"], truth, primary, seed=run.seed, criterion=crit)


def _spearman_summary(
    criteria: Sequence[str], included: Sequence[SeedRun], truth: GroundTruth, primary: str
) -> dict[str, Any]:
    """Figure 12: the single-edge Spearman summary of every criterion that has scores."""
    spearman_out: dict[str, Any] = {"reference": "own final cell", "metric": primary, "criteria": {}}
    for crit in criteria:
        records = [record for run in included for record in _seed_correlations(run, crit, truth, primary)]
        if records:
            spearman_out["criteria"][crit] = summarise_correlations(records)
    return spearman_out


def _eval_costs(
    space: str, criteria: Sequence[str], included: Sequence[SeedRun], eval_size: Mapping[str, int]
) -> dict[str, Any]:
    """Parameters and multiply-adds of the final cells' DARTS-style evaluation networks (mean ± std over seeds)."""
    size = {"C": int(eval_size.get("C", 36)), "layers": int(eval_size.get("layers", 20))}
    costs = {}
    for crit in criteria:
        per = {s: eval_cost(space, c, **size) for s, c in _final_cells(included, crit).items()}
        costs[crit] = {
            "params_m": _stat({s: v["params_m"] for s, v in per.items()}),
            "madds_m": _stat({s: v["madds_m"] for s, v in per.items()}),
        }
    return {"size": size, "criteria": costs}


def analyse_variant(
    variant: str,
    runs: Sequence[SeedRun],
    *,
    space: str,
    truth: GroundTruth | None = None,
    metric: str | None = None,
    consensus: Mapping[str, str | None] | None = None,
    cost_hours: float | None = None,
    eval_size: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Every statistic of one variant (JSON-ready apart from NaNs; see the module docstring).

    ``consensus`` is the per-criterion consensus cell (``report.json``'s ``criterion_consensus``); a missing
    one is the most common final cell. ``cost_hours`` is the search cost to show (default: the summed
    ``epoch_seconds`` of the variant's reports). ``eval_size`` (``C``, ``layers``) sizes DARTS eval networks; ``None``
    skips parameters and multiply-adds.
    """
    included, excluded = _included(runs)
    criteria = _criteria(included)
    has_history = any(r.reports for r in included)
    primary = truth.primary_metric(metric) if truth is not None else None
    if truth is not None and primary is None:
        truth = None
    consensus_cells = _consensus_cells(included, criteria, consensus)
    epoch_hours = sum(r.epoch_seconds for r in runs) / 3600.0 if has_history else None
    if cost_hours is None:
        cost_hours = epoch_hours
    out: dict[str, Any] = {
        "variant": variant,
        "space": space,
        "seeds": [r.seed for r in included],
        "excluded": excluded,
        "criteria": criteria,
        "has_history": has_history,
        "truth_source": truth.source if truth is not None else None,
        "metric": primary,
        "metrics": truth.metrics if truth is not None else [],
        "finals": {str(r.seed): dict(r.final) for r in included},
        "stops": {
            str(r.seed): {"last_epoch": r.last_epoch, "stop_reason": r.stop_reason, "status": r.status} for r in runs
        },
        "consensus": consensus_cells,
        "cost_trial_hours": cost_hours,
        "epoch_trial_hours": epoch_hours,
    }
    structure, param_free_final = _structure(space, criteria, included, consensus_cells)
    out["structure"] = structure
    out["param_free_final"] = param_free_final
    if truth is not None:
        out["table_i"], out["table_v"] = _truth_tables(
            criteria, structure, included, truth, primary, consensus_cells, cost_hours
        )
    value = (lambda c: truth.value(c, primary)) if truth is not None else None
    out["stability"] = [_stability_row(crit, included, value, has_history) for crit in criteria]
    if has_history:
        out["by_epoch"] = _by_epoch(space, criteria, included, value)
    if space in NB201_LIKE and truth is not None and truth.has_table and has_history:
        out["spearman"] = _spearman_summary(criteria, included, truth, primary)
    if space not in NB201_LIKE and eval_size is not None:
        out["eval_cost"] = _eval_costs(space, criteria, included, eval_size)
    return out


# ============================================================================================ whole launch


def variant_space(launch: Mapping[str, Any], variant: str, runs: Sequence[SeedRun]) -> str:
    config = (launch.get("variants") or {}).get(variant) or {}
    if config.get("space"):
        return str(config["space"])
    for run in runs:
        for rep in run.reports:
            if rep.get("space"):
                return str(rep["space"])
    cells = [c for run in runs for c in run.final.values()]
    return "nb201" if cells and cells[0].startswith("|") else "darts"


def _variant_truth(
    exp: Experiment,
    variant: str,
    runs: Sequence[SeedRun],
    nb201_table: str | Path | None,
    tables: dict[str, Any],
    notes: list[str],
) -> GroundTruth | None:
    """An NB201 variant's ground truth: ``nb201_table``, else the variant config's ``nb201_table`` (each path
    loaded once into ``tables``), else the accuracies the launch recorded; ``None`` when there is none."""
    from ostr_ray.core.nb201_bench import load_nb201_table

    truth = None
    config = (exp.launch.get("variants") or {}).get(variant) or {}
    table_arg = str(nb201_table) if nb201_table else config.get("nb201_table")
    if table_arg:
        resolved = Path(table_arg) if nb201_table else resolve_table_path(table_arg, exp.path)
        if resolved is None:
            notes.append(f"{variant}: NB201 table {table_arg!r} from launch.json not found")
        else:
            key = str(resolved)
            if key not in tables:
                tables[key] = load_nb201_table(resolved)
            truth = GroundTruth(table=tables[key], source=key)
    if truth is None:
        known = recorded_truth(variant, exp.report, runs)
        if known:
            truth = GroundTruth(known=known, source="accuracies recorded by the launch")
    return truth


def build_evidence(
    path: str | Path | Experiment,
    *,
    nb201_table: str | Path | None = None,
    metric: str | None = None,
    eval_size: Mapping[str, int] | None = PAPER_EVAL_SIZE,
) -> dict[str, Any]:
    """Every variant's statistics for the experiment directory ``path`` (or a loaded :class:`Experiment`).

    ``nb201_table`` overrides the variant configs' ``nb201_table``; ``eval_size`` sizes the DARTS evaluation
    networks (``None`` skips them).
    """
    exp = path if isinstance(path, Experiment) else load_experiment(path)
    variants = list((exp.report.get("variants") or {}).keys())
    for trial in (exp.history or {}).get("trials", []):
        if trial.get("variant") not in variants:
            variants.append(trial["variant"])
    if not variants:
        raise EvidenceError(f"{exp.path}/{REPORT_FILE} lists no variants")
    notes: list[str] = []
    out: dict[str, Any] = {
        "name": exp.report.get("name") or Path(exp.path).name,
        "experiment_path": exp.path,
        "stop_reason": exp.report.get("stop_reason"),
        "search_cost_trial_hours": exp.report.get("search_cost_trial_hours"),
        "has_history": exp.history is not None,
        "notes": notes,
        "variants": {},
        "figures": [],
    }
    tables: dict[str, Any] = {}
    for variant in variants:
        runs = collect_seeds(exp.report, exp.history, variant)
        space = variant_space(exp.launch, variant, runs)
        truth = _variant_truth(exp, variant, runs, nb201_table, tables, notes) if space in NB201_LIKE else None
        variant_data = (exp.report.get("variants") or {}).get(variant) or {}
        cost = exp.report.get("search_cost_trial_hours") if len(variants) == 1 else None
        out["variants"][variant] = analyse_variant(
            variant,
            runs,
            space=space,
            truth=truth,
            metric=metric,
            consensus=variant_data.get("criterion_consensus") or {},
            cost_hours=cost,
            eval_size=eval_size,
        )
    if exp.history is None:
        notes.append(f"no {HISTORY_FILE}: per-epoch figures, stability over epochs and Spearman are skipped")
    return out


def to_json(evidence: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """``evidence`` (plus ``extra`` keys) with NaN/inf as ``None`` and numpy values as Python numbers."""
    return _clean({**evidence, **extra})


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
