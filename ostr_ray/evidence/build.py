"""The evidence of a whole launch: every variant's statistics (:func:`analyse_variant`) with its space, its
ground truth and its decoder convention found through the launch's records and the registries, and the
JSON form of the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ostr_ray.core.config import SearchConfig, decoder_settings
from ostr_ray.evidence.analysis import analyse_variant
from ostr_ray.evidence.evaluation import load_evaluation
from ostr_ray.evidence.loading import (
    EvidenceError,
    Experiment,
    GroundTruth,
    SeedRun,
    collect_seeds,
    load_experiment,
    recorded_truth,
    resolve_table_path,
)
from ostr_ray.evidence.stats import has_nb201_cells
from ostr_ray.experiment.layout import HISTORY, LAUNCH_SPEC
from searchspaces import SearchSpaceError, get_space, list_spaces

PAPER_EVAL_SIZE: dict[str, int] = {"C": 36, "layers": 20}
"""DARTS' CIFAR evaluation network (NetworkCIFAR) size for parameters and multiply-adds."""


def variant_space(exp: Experiment, variant: str, runs: Sequence[SeedRun]) -> str:
    """The variant's space: the report's record of it, else the launch spec's, else the epoch reports'; only
    when none says, the first registered space that parses the variant's final cells."""
    summary = exp.report.variants.get(variant)
    named = (summary.space if summary else None) or exp.variant_config(variant).get("space")
    named = named or next((rep.space for run in runs for rep in run.reports if rep.space), None)
    if named:
        return str(named)
    cells = [c for run in runs for c in run.final.values()]
    if cells:
        for space in list_spaces():
            try:
                get_space(space).parse_genotype(cells[0])
            except (SearchSpaceError, ValueError):
                continue
            return space
    raise EvidenceError(f"{exp.path}: no record says which search space variant {variant!r} searched")


def _decoder(exp: Experiment, variant: str, space: str) -> dict[str, Any] | None:
    """The NB201 decoder convention the variant's cells were selected under (``None`` for spaces whose decoder
    does not take ``nb201_none``); a launch made before the setting existed decoded with its default."""
    if "nb201_none" not in decoder_settings(get_space(space)):
        return None
    value = exp.variant_config(variant).get("nb201_none")
    return {"nb201_none": value or SearchConfig.nb201_none, "recorded": value is not None}


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
    table_arg = str(nb201_table) if nb201_table else exp.variant_config(variant).get("nb201_table")
    if table_arg:
        resolved = Path(table_arg) if nb201_table else resolve_table_path(table_arg, exp.path)
        if resolved is None:
            notes.append(f"{variant}: NB201 table {table_arg!r} from {LAUNCH_SPEC} not found")
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


def _variants(exp: Experiment) -> list[str]:
    """The report's variants, then any only the history knows."""
    variants = list(exp.report.variants)
    for key in exp.history.trial_keys() if exp.history is not None else []:
        if key.variant not in variants:
            variants.append(key.variant)
    if not variants:
        raise EvidenceError(f"the launch report in {exp.path} lists no variants")
    return variants


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
    variants = _variants(exp)
    notes: list[str] = []
    cost = exp.report.search_cost_trial_hours or None  # 0 = not recorded (a launch always takes some time)
    out: dict[str, Any] = {
        "name": exp.report.name or Path(exp.path).name,
        "experiment_path": exp.path,
        "stop_reason": exp.report.stop_reason or None,
        "search_cost_trial_hours": cost,
        "has_history": exp.history is not None,
        "notes": notes,
        "variants": {},
        "figures": [],
    }
    tables: dict[str, Any] = {}
    for variant in variants:
        runs = collect_seeds(exp.report, exp.history, variant)
        space = variant_space(exp, variant, runs)
        truth = _variant_truth(exp, variant, runs, nb201_table, tables, notes) if has_nb201_cells(space) else None
        summary = exp.report.variants.get(variant)
        data = analyse_variant(
            variant,
            runs,
            space=space,
            truth=truth,
            metric=metric,
            consensus=summary.criterion_consensus if summary else {},
            cost_hours=cost if len(variants) == 1 else None,
            eval_size=eval_size,
        )
        decoder = _decoder(exp, variant, space)
        out["variants"][variant] = {**data, "decoder": decoder} if decoder else data
    if exp.history is None:
        notes.append(f"no {HISTORY}: per-epoch figures, stability over epochs and Spearman are skipped")
    evaluation = load_evaluation(exp.path)
    if evaluation is not None:
        out["evaluation"] = evaluation
    return out


def to_json(evidence: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """``evidence`` (plus ``extra`` keys; a record such as the launch report is written in its JSON form) with
    NaN/inf as ``None`` and numpy values as Python numbers."""
    return _clean({**evidence, **extra})


def _clean(value: Any) -> Any:
    if hasattr(value, "to_json") and callable(value.to_json):
        return _clean(value.to_json())
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
