"""Paper-style evidence from a finished launch: the tables and figures of the OStr-DARTS paper's analyses.

Input is a launch's experiment directory, read through its records (:class:`~ostr_ray.experiment.LaunchDir`):
the launch report (final genotypes, consensus, cost), the coordinator's history (every seed's per-epoch
:class:`~ostr_ray.core.events.EpochReport`) and the launch spec (variant configs; the NB201 table path and
decoder convention). Every registered criterion (``magnitude`` = DARTS, ``ostr``, ``ostr_star``, ``naive``)
selects a cell from the *same* supernets each epoch, so comparing criteria is an ablation of the selection
rule alone; criteria and spaces are described by their registries, never named here.

Modules (each imports its siblings directly, never this package):

* :mod:`~ostr_ray.evidence.stats` -- pure statistics and cell helpers (mean ± std, Spearman, pair agreement,
  parameter-free ops, NB201 single-edge neighbourhoods, what the registries say).
* :mod:`~ostr_ray.evidence.loading` -- the launch's records, every seed's epoch reports, the ground truth.
* :mod:`~ostr_ray.evidence.measures` -- per seed and per edge: epoch curves, stability, Spearman, eval cost.
* :mod:`~ostr_ray.evidence.analysis` -- every statistic of a variant; its docstring states the conventions
  and what each table means.
* :mod:`~ostr_ray.evidence.build` -- the whole launch: each variant's space, ground truth and decoder; JSON.
* :mod:`~ostr_ray.evidence.render` -- the tables, as markdown or rich.
* :mod:`~ostr_ray.evidence.figures` -- the matplotlib figures (PNG bytes).
* :mod:`~ostr_ray.evidence.outputs` -- writing the files (named in :mod:`ostr_ray.experiment.layout`), logging
  them to the launch's MLflow parent run.

The package imports neither Ray nor MLflow (MLflow only lazily in :func:`log_to_mlflow`; matplotlib and rich
only when a figure or a rich table is made).
"""

from ostr_ray.evidence.analysis import analyse_variant
from ostr_ray.evidence.build import PAPER_EVAL_SIZE, build_evidence, to_json, variant_space
from ostr_ray.evidence.figures import make_figures
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
from ostr_ray.evidence.measures import (
    EdgeCorrelation,
    column_stats,
    edge_correlations,
    epoch_matrix,
    eval_cost,
    stability,
    summarise_correlations,
)
from ostr_ray.evidence.outputs import log_to_mlflow, mlflow_parent_run, write_outputs
from ostr_ray.evidence.render import TableSpec, markdown_table, render_markdown, render_rich, variant_tables
from ostr_ray.evidence.stats import (
    NB201_CANDIDATE_OPS,
    STD_DDOF,
    baseline_criterion,
    canonical_nb201,
    count_param_free,
    edge_name,
    has_nb201_cells,
    mean_std,
    ordered_criteria,
    pair_agreement,
    parameter_free_set,
    selection_scores,
    single_edge_neighbourhood,
    spearman,
)

__all__ = [
    # stats
    "NB201_CANDIDATE_OPS",
    "STD_DDOF",
    "baseline_criterion",
    "canonical_nb201",
    "count_param_free",
    "edge_name",
    "has_nb201_cells",
    "mean_std",
    "ordered_criteria",
    "pair_agreement",
    "parameter_free_set",
    "selection_scores",
    "single_edge_neighbourhood",
    "spearman",
    # loading
    "EvidenceError",
    "Experiment",
    "GroundTruth",
    "SeedRun",
    "collect_seeds",
    "load_experiment",
    "recorded_truth",
    "resolve_table_path",
    # measures
    "EdgeCorrelation",
    "column_stats",
    "edge_correlations",
    "epoch_matrix",
    "eval_cost",
    "stability",
    "summarise_correlations",
    # analysis, build
    "PAPER_EVAL_SIZE",
    "analyse_variant",
    "build_evidence",
    "to_json",
    "variant_space",
    # render
    "TableSpec",
    "markdown_table",
    "render_markdown",
    "render_rich",
    "variant_tables",
    # figures
    "make_figures",
    # outputs
    "log_to_mlflow",
    "mlflow_parent_run",
    "write_outputs",
]
