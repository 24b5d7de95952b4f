"""Every statistic of one variant of the evidence report (the launch-level assembly is in
:mod:`ostr_ray.evidence.build`, the per-seed and per-edge measures in :mod:`ostr_ray.evidence.measures`).

Every registered criterion (``magnitude`` = DARTS, ``ostr``, ``ostr_star``, ``naive``, and any registered
later) selects a cell from the *same* supernets each epoch, so comparing criteria is an ablation of the
selection rule alone. Criteria are listed in registry order, then any no longer registered, sorted.

Conventions used by every statistic below
-----------------------------------------
* **Seeds.** A variant's seeds are those in the launch report and the history; seeds whose trial *failed* or that
  never produced a genotype are left out (listed under ``excluded``). Every "mean ± std" is over the included
  seeds, std being the population std (``ddof = STD_DDOF = 0``); NaN values (unknown cells) are ignored.
* **Final cell** of (seed, criterion): the genotype of the seed's last epoch report that carries one for that
  criterion (= the launch report's per-seed genotype; without the history that genotype is used).
* **Ground truth.** Cells of spaces whose registry entry says ``benchmark == "nb201"`` are looked up in an
  :class:`~ostr_ray.core.nb201_bench.NB201Table` (``--nb201-table`` or the variant config's ``nb201_table``).
  Without a table, the accuracies the launch recorded itself (the report's ``ground_truth`` and every epoch
  report's ``ground_truth``) are used where they cover a cell; the single-edge neighbourhood statistics need
  the table. Metrics are ordered as the papers lay them out: the benchmark's own columns first (CIFAR-10,
  CIFAR-100, ImageNet16-120, each valid then test), then any others. The *primary metric* (figures, Table
  V/VI and the Spearman statistic) is ``metric`` if given, else the first column whose name contains
  ``test``, else the first column; Table I shows every column.
* **Decoder convention** of NB201 cells: the variant config's ``nb201_none`` (``exclude``: 'none' is never
  selected, the authors' code; ``include``: 'none' competes in the argmax, xautodl's DARTS baseline); a
  launch that predates the setting decoded with ``exclude``.
* **Per-epoch curves** (Figures 9/10): at epoch ``e`` a seed contributes the cell of its latest report with
  epoch <= ``e`` (a seed that stopped early keeps its final cell, as in the coordinator); epochs run from 1 to
  the latest epoch of any seed. Mean and std are over the seeds that have a cell at that epoch.
* **Parameter-free ops** of a cell: its kept edges whose op is in ``space.parameter_free_ops`` minus ``'none'``
  (NB201: skip_connect, avg_pool_3x3; DARTS: skip_connect, max_pool_3x3, avg_pool_3x3), per cell type.

Tables (one row per criterion)
------------------------------
* **Table I** -- per metric: mean ± std of the final cells' ground truth; the criterion's consensus cell
  (the report's ``criterion_consensus``, else the most common final cell, ties to the smallest string) and
  its ground truth; the search cost in trial-hours (the report's ``search_cost_trial_hours``, Tune's
  summed trial time, for a one-variant launch; for a launch of several variants the variant's own sum over
  its seeds of every epoch's ``epoch_seconds``, which the JSON also gives as ``epoch_trial_hours``); each
  seed's last epoch. The *optimal* row (``optimal`` in the JSON) is each column's best cell in the table,
  as in NB201's paper; it needs the whole table in memory (a CSV), not a benchmark file read cell by cell.
* **Table V** (selection ablation) -- primary-metric mean ± std; best and worst seed (value and seed);
  ``= consensus``: seeds whose final cell equals the consensus cell; ``distinct``: number of different final
  cells; ``pair agreement``: share of seed pairs with identical final cells; ``= DARTS``: seeds whose final
  cell equals *the same seed's* cell under the registry's baseline criterion (magnitude, i.e. DARTS; the
  JSON key is ``same_as_magnitude``, ``None`` without a baseline) -- how often the selection rule alone
  changes the answer on the same supernet.
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
  for ties) between ``c``'s final-epoch scores of those 4 ops on that edge (what the registered criterion
  ranks by, re-applied to the report whose cell is the final cell: magnitude the betas, ostr, ostr_star and
  naive their score matrices) and the 4 cells' primary-metric ground truth. A constant score or accuracy
  vector has no rho (counted as ``undefined``). Summary over all (seed, edge) pairs with a rho: mean ± std,
  share with rho > 0; ``best-op share`` is the share of (seed, edge) pairs whose chosen op gives the
  neighbourhood's highest accuracy.
* **DARTS / PC-DARTS** (no ground truth) -- per-criterion final cells per seed, agreement (share of seeds
  holding the most common final cell), parameter-free op counts (final and by epoch), and each final cell's
  evaluation network's parameters (M, without the auxiliary head) and multiply-adds (M, one 32x32 image,
  ``FlopCounterMode`` FLOPs / 2) at the DARTS CIFAR size ``C=36, layers=20`` unless told otherwise.

The tables are laid out in :mod:`ostr_ray.evidence.render`, the figures drawn in :mod:`ostr_ray.evidence.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ostr_ray.core.consensus import modal_genotype
from ostr_ray.evidence.loading import GroundTruth, SeedRun
from ostr_ray.evidence.measures import (
    EdgeCorrelation,
    column_stats,
    edge_correlations,
    epoch_matrix,
    eval_cost,
    stability,
    summarise_correlations,
)
from ostr_ray.evidence.stats import (
    baseline_criterion,
    count_param_free,
    has_nb201_cells,
    mean_std,
    ordered_criteria,
    pair_agreement,
    selection_scores,
)
from searchspaces import get_space


def _criteria(runs: Sequence[SeedRun]) -> list[str]:
    return ordered_criteria(c for run in runs for c in run.final)


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
        consensus_cells[crit] = (consensus or {}).get(crit) or modal_genotype(cells)[0]
    return consensus_cells


def _structure(
    space: str, criteria: Sequence[str], included: Sequence[SeedRun], consensus_cells: Mapping[str, str | None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Agreement and Table V's counting columns per criterion, and the parameter-free ops of the final cells."""
    structure, param_free_final = [], {}
    baseline = baseline_criterion()
    baseline_cells = _final_cells(included, baseline) if baseline else {}
    for crit in criteria:
        cells = _final_cells(included, crit)
        structure.append(
            {
                "criterion": crit,
                "n": len(cells),
                "agreement": modal_genotype(list(cells.values()))[1],
                "n_consensus": sum(c == consensus_cells[crit] for c in cells.values()),
                "n_distinct": len(set(cells.values())),
                "pair_agreement": pair_agreement([cells[s] for s in sorted(cells)]),
                "same_as_magnitude": (
                    sum(baseline_cells.get(s) == c for s, c in cells.items()) if baseline_cells else None
                ),
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
) -> dict[str, Any]:
    """Tables I and V: the ground truth of the final cells and of the consensus cell, per criterion; and
    Table I's optimal row when the whole table is at hand."""
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
    optimal = truth.optimal()
    return {"table_i": table_i, "table_v": table_v, **({"optimal": optimal} if optimal is not None else {})}


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
    by_epoch["epochs"] = list(range(1, max(int(r.epoch) for run in included for r in run.reports) + 1))
    for crit in criteria:
        if value is not None:
            by_epoch["accuracy"][crit] = column_stats(epoch_matrix(included, crit, value)[1])
        by_epoch["param_free"][crit] = {
            t: column_stats(epoch_matrix(included, crit, lambda c, t=t: count_param_free(space, c).get(t, 0))[1])
            for t in cell_types
        }
    return by_epoch


def _seed_correlations(run: SeedRun, crit: str, truth: GroundTruth, primary: str) -> list[EdgeCorrelation]:
    """Figure 12's records of one seed: ``crit``'s final-epoch normal-cell scores around its own final cell."""
    rep = run.final_report(crit)
    scores = selection_scores(rep, crit) if rep else None
    if rep is None or scores is None or "normal" not in scores:
        return []
    return edge_correlations(rep.genotypes[crit], scores["normal"], truth, primary, seed=run.seed, criterion=crit)


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

    ``consensus`` is the per-criterion consensus cell (the report's ``criterion_consensus``); a missing
    one is the most common final cell. ``cost_hours`` is the search cost to show (default: the summed
    ``epoch_seconds`` of the variant's reports). ``eval_size`` (``C``, ``layers``) sizes DARTS eval networks;
    ``None`` skips parameters and multiply-adds.
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
        out.update(_truth_tables(criteria, structure, included, truth, primary, consensus_cells, cost_hours))
    value = (lambda c: truth.value(c, primary)) if truth is not None else None
    out["stability"] = [_stability_row(crit, included, value, has_history) for crit in criteria]
    if has_history:
        out["by_epoch"] = _by_epoch(space, criteria, included, value)
    nb201_cells = has_nb201_cells(space)
    if nb201_cells and truth is not None and truth.has_table and has_history:
        out["spearman"] = _spearman_summary(criteria, included, truth, primary)
    if not nb201_cells and eval_size is not None:
        out["eval_cost"] = _eval_costs(space, criteria, included, eval_size)
    return out
