"""Paper-style evidence from a finished launch: the tables and figures of the OStr-DARTS paper's analyses.

Input is a launch's experiment directory: ``report.json`` (final genotypes, consensus, cost), ``history.json``
(every seed's per-epoch :class:`~ostr_ray.events.EpochReport`) and ``launch.json`` (variant configs; the NB201
table path). Every criterion (``magnitude`` = DARTS, ``ostr``, ``ostr_star``, ``naive``) selects a cell from the
*same* supernets each epoch, so comparing criteria is an ablation of the selection rule alone.

Modules (each imports its siblings directly, never this package):

* :mod:`~ostr_ray.evidence.stats` -- pure statistics and cell helpers (mean ± std, Spearman, modal cell, pair
  agreement, parameter-free ops, NB201 single-edge neighbourhoods, selection scores).
* :mod:`~ostr_ray.evidence.loading` -- the experiment files, every seed's epoch reports, the ground truth.
* :mod:`~ostr_ray.evidence.analysis` -- every statistic per variant and for the launch; its docstring states
  the conventions and what each table means.
* :mod:`~ostr_ray.evidence.render` -- the tables, as markdown or rich.
* :mod:`~ostr_ray.evidence.figures` -- the matplotlib figures (PNG bytes).
* :mod:`~ostr_ray.evidence.outputs` -- writing the files, logging them to the launch's MLflow parent run.

The package imports neither Ray nor MLflow (MLflow only lazily in :func:`log_to_mlflow`; matplotlib and rich
only when a figure or a rich table is made).
"""

from ostr_ray.evidence.analysis import (
    PAPER_EVAL_SIZE,
    EdgeCorrelation,
    analyse_variant,
    build_evidence,
    edge_correlations,
    epoch_matrix,
    eval_cost,
    stability,
    summarise_correlations,
    to_json,
    variant_space,
)
from ostr_ray.evidence.figures import FIGURE_FILES, make_figures
from ostr_ray.evidence.loading import (
    HISTORY_FILE,
    LAUNCH_FILE,
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
from ostr_ray.evidence.outputs import (
    JSON_FILE,
    MARKDOWN_FILE,
    MLFLOW_RUNS_FILE,
    log_to_mlflow,
    mlflow_parent_run,
    write_outputs,
)
from ostr_ray.evidence.render import TableSpec, markdown_table, render_markdown, render_rich, variant_tables
from ostr_ray.evidence.stats import (
    CRITERIA,
    CRITERION_LABELS,
    NB201_CANDIDATE_OPS,
    NB201_LIKE,
    STD_DDOF,
    canonical_nb201,
    count_param_free,
    edge_name,
    mean_std,
    modal,
    pair_agreement,
    parameter_free_set,
    selection_scores,
    single_edge_neighbourhood,
    spearman,
)

__all__ = [
    # stats
    "CRITERIA",
    "CRITERION_LABELS",
    "NB201_CANDIDATE_OPS",
    "NB201_LIKE",
    "STD_DDOF",
    "canonical_nb201",
    "count_param_free",
    "edge_name",
    "mean_std",
    "modal",
    "pair_agreement",
    "parameter_free_set",
    "selection_scores",
    "single_edge_neighbourhood",
    "spearman",
    # loading
    "HISTORY_FILE",
    "LAUNCH_FILE",
    "REPORT_FILE",
    "EvidenceError",
    "Experiment",
    "GroundTruth",
    "SeedRun",
    "collect_seeds",
    "load_experiment",
    "recorded_truth",
    "resolve_table_path",
    # analysis
    "PAPER_EVAL_SIZE",
    "EdgeCorrelation",
    "analyse_variant",
    "build_evidence",
    "edge_correlations",
    "epoch_matrix",
    "eval_cost",
    "stability",
    "summarise_correlations",
    "to_json",
    "variant_space",
    # render
    "TableSpec",
    "markdown_table",
    "render_markdown",
    "render_rich",
    "variant_tables",
    # figures
    "FIGURE_FILES",
    "make_figures",
    # outputs
    "JSON_FILE",
    "MARKDOWN_FILE",
    "MLFLOW_RUNS_FILE",
    "log_to_mlflow",
    "mlflow_parent_run",
    "write_outputs",
]
