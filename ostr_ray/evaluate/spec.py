"""What ``ostr-ray evaluate`` is asked (:class:`EvaluateOptions`) and everything it checks before Ray starts
(:func:`prepare_evaluation`): the launch and its cells, the selectors, the protocol against the space and the
data, every cell's size against the protocol's limit; the result is an :class:`EvaluationSpec`, saved as the
evaluation directory's ``evaluate.json`` and read again by ``--resume``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.core.fieldtypes import option
from ostr_ray.evaluate.selection import (
    Cell,
    EvaluateError,
    LaunchCells,
    parse_selectors,
    select_cells,
)
from ostr_ray.experiment import LaunchDir, LaunchDirError
from ostr_ray.experiment.layout import EvaluationDir, evaluation_run_name
from ostr_ray.retrain.options import RetrainRecipe


@dataclass
class EvaluatePlacement:
    """Where the runs train and where the evaluation records."""

    cpus_per_run: float = option(1.0, "CPUs per run (one Tune trial each).")
    gpus_per_run: float = option(0.0, "GPUs per run, 0 or 1.")
    max_failures: int = option(2, "Retries of a failed run, each from its last checkpoint.")
    address: str | None = option(None, "Join a running Ray cluster ('auto'); else start one.")
    tracking_uri: str | None = option(None, "MLflow tracking URI; default: the launch's own store.")


SCHEDULERS = ("none", "asha")
"""``--scheduler``: every run trains every epoch (``none``), or Tune's ASHA stops the runs that trail (``asha``)."""


@dataclass
class EvaluateScreening:
    """Early screening of many cells (off by default): Tune's ASHA compares the runs' top-1 at rungs of
    ``grace_period x reduction_factor^k`` epochs and stops those below the top ``1 / reduction_factor``."""

    scheduler: str = option("none", "'asha': stop runs whose top-1 trails at a rung (Tune's ASHA); 'none' trains all.")
    grace_period: int = option(1, "ASHA: epochs every run trains before it may be stopped (the first rung).")
    reduction_factor: float = option(4.0, "ASHA: each rung keeps the top 1/factor of the runs it has seen.")


@dataclass
class EvaluateOptions:
    """Everything ``ostr-ray evaluate`` is asked (see its ``--help``), as the command line fills it."""

    launch: str = option("", "A launch directory, or its MLflow run id (with --tracking-uri).", argument=True)
    cells: list[str] | None = option(
        None, "Selectors: consensus, criteria, seeds, random:K, or a genotype; repeat or comma-separate."
    )
    seeds: int = option(3, "Retraining seeds per cell (seeds 0..R-1).")
    random_seed: int = option(0, "Seed of the random:K draws (the same seed draws the same cells).")
    criterion: str | None = option(None, "The criterion of 'seeds' (default: the launch's watched criterion).")
    variant: str | None = option(None, "Launch variant, when the launch has several.")
    nb201_table: str | None = option(None, "NB201 table (CSV/NATS) for the benchmark's accuracy beside each cell.")
    resume: bool = option(False, "Continue the launch's interrupted evaluation.")
    dry_run: bool = option(False, "Print the cells and runs; train nothing.")
    recipe: RetrainRecipe = field(default_factory=RetrainRecipe)
    placement: EvaluatePlacement = field(default_factory=EvaluatePlacement)
    screening: EvaluateScreening = field(default_factory=EvaluateScreening)


@dataclass
class EvaluationSpec:
    """An evaluation, resolved and checked: its cells, runs, recipe and resources (``evaluate.json``)."""

    launch_path: str
    variant: str
    space: str
    criterion: str
    selectors: list[str]
    seeds: list[int]
    random_seed: int
    dataset: str
    data_dir: str | None
    num_classes: int
    config: dict[str, Any]
    cells: list[dict[str, Any]]
    """Per cell: ``id``, ``genotype`` (string), ``genotype_json``, ``credits`` ({group, label}), ``size``
    (params and multiply-adds under the protocol), ``benchmark`` (NB201 table metrics, when a table is given)."""
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_failures: int = 2
    tracking_uri: str | None = None
    mlflow: dict[str, Any] = field(default_factory=dict)
    """``experiment_id``, ``parent_run_id`` (the launch's), ``evaluation_run_id``, ``runs`` (run name -> id)."""
    scheduler: dict[str, Any] = field(default_factory=dict)
    """Empty: every run trains every epoch; else ASHA's settings (:func:`scheduler_settings`)."""
    notes: list[str] = field(default_factory=list)
    debug: dict[str, Any] = field(default_factory=dict)
    """Test hooks handed to the training loop (see :func:`ostr_ray.retrain.worker._debug_hooks`)."""

    @property
    def path(self) -> str:
        return EvaluationDir(self.launch_path).path

    def runs(self) -> list[dict[str, Any]]:
        """Every (cell, retraining seed): its name, cell and seed, in cell order then seed order."""
        return [
            {"name": evaluation_run_name(cell["id"], seed), "cell": cell["id"], "seed": seed}
            for cell in self.cells
            for seed in self.seeds
        ]

    def cell(self, cell_id: str) -> dict[str, Any]:
        return next(c for c in self.cells if c["id"] == cell_id)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_options(options: EvaluateOptions) -> None:
    """The checks that need nothing but the options (R, resources)."""
    place = options.placement
    if options.seeds < 1:
        raise EvaluateError(f"--seeds must be >= 1 (retraining seeds per cell), got {options.seeds}")
    if place.cpus_per_run <= 0 or place.gpus_per_run < 0:
        cpus, gpus = place.cpus_per_run, place.gpus_per_run
        raise EvaluateError(f"resources per run must be positive (cpus {cpus}, gpus {gpus})")
    if place.gpus_per_run > 1:
        raise EvaluateError(f"--gpus-per-run {place.gpus_per_run}: a run drives at most one GPU")
    if place.max_failures < -1:
        raise EvaluateError(f"--max-failures must be >= -1 (-1 = unlimited), got {place.max_failures}")
    screen = options.screening
    if screen.scheduler not in SCHEDULERS:
        raise EvaluateError(f"--scheduler {screen.scheduler!r}: choose {' or '.join(SCHEDULERS)}")
    if screen.grace_period < 1 or screen.reduction_factor <= 1:
        raise EvaluateError(
            f"ASHA needs --grace-period >= 1 and --reduction-factor > 1, got {screen.grace_period} and "
            f"{screen.reduction_factor:g}"
        )


def scheduler_settings(screening: EvaluateScreening, epochs: int) -> dict[str, Any]:
    """ASHA's settings for runs of ``epochs`` epochs (empty without ``--scheduler asha``). It ranks the runs by
    the top-1 the protocol measures after every epoch (``test_top1``: the retraining protocols hold out no
    separate validation split, so screening reads the same held-out split the table reports)."""
    if screening.scheduler != "asha":
        return {}
    if screening.grace_period >= epochs:
        raise EvaluateError(
            f"--grace-period {screening.grace_period} leaves ASHA no rung before the last of {epochs} epochs; "
            "lower it or drop --scheduler asha"
        )
    from ostr_ray.tracking.schema import TEST_TOP1

    return {
        "name": "asha",
        "metric": TEST_TOP1,
        "mode": "max",
        "time_attr": "epoch",
        "max_t": epochs,
        "grace_period": screening.grace_period,
        "reduction_factor": screening.reduction_factor,
    }


def resolve_launch(text: str, tracking_uri: str | None) -> LaunchDir:
    """The launch directory ``text`` names: a path, or a launch's MLflow run id (its ``ostr.launch_path`` tag)."""
    from ostr_ray.retrain.genotypes import MLFLOW_RUN_ID

    if not text:
        raise EvaluateError("missing LAUNCH: a launch directory or its MLflow run id")
    path = Path(text).expanduser()
    match = MLFLOW_RUN_ID.match(text.strip())
    if not path.exists() and match:
        from mlflow.exceptions import MlflowException

        from ostr_ray.tracking import schema
        from ostr_ray.tracking.store import client

        try:
            tags = client(tracking_uri).get_run(match.group(1)).data.tags
        except MlflowException as exc:
            raise EvaluateError(f"no MLflow run {match.group(1)}: {str(exc).splitlines()[0]}") from None
        if not tags.get(schema.LAUNCH_PATH):
            raise EvaluateError(f"MLflow run {match.group(1)} is not a launch run (no {schema.LAUNCH_PATH} tag)")
        path = Path(tags[schema.LAUNCH_PATH])
    launch = LaunchDir(path.resolve())
    if not launch.exists():
        raise EvaluateError(f"no launch directory at {path}")
    return launch


def launch_cells(launch: LaunchDir, variant: str | None, criterion: str | None) -> tuple[str, LaunchCells]:
    """``(variant, its cells)`` from the launch's report (and its spec's decoder settings)."""
    from ostr_ray.core.config import decoder_settings
    from ostr_ray.evidence.stats import ordered_criteria
    from searchspaces import get_space

    try:
        report = launch.read_report(required=True)
        spec = launch.read_spec(required=False)
    except LaunchDirError as exc:
        raise EvaluateError(f"{exc} (evaluate needs a launch that has ended)") from None
    from ostr_ray.retrain.genotypes import choose_variant  # lazily: it imports MLflow
    from ostr_ray.retrain.protocols import RetrainError

    try:
        variant = choose_variant(report, variant, launch.path)
    except RetrainError as exc:
        raise EvaluateError(str(exc)) from None
    data = report.variants[variant]
    config = spec.variants.get(variant, {}) if spec else {}
    space = data.space or config.get("space") or _space_of(data)
    watched = data.criterion or report.criterion
    crit = criterion or watched
    if criterion is not None and criterion not in ordered_criteria(data.criterion_consensus):
        raise EvaluateError(f"--criterion {criterion!r}: the launch has {', '.join(data.criterion_consensus)}")
    decoder = {name: config[name] for name in decoder_settings(get_space(space)) if config.get(name) is not None}
    return variant, LaunchCells(
        space=space,
        criterion=crit,
        consensus=data.consensus_genotype if crit == watched else data.criterion_consensus.get(crit),
        criterion_consensus={c: data.criterion_consensus.get(c) for c in ordered_criteria(data.criterion_consensus)},
        seeds={int(s): dict(info.genotypes) for s, info in data.seeds.items()},
        decoder=decoder,
    )


def _space_of(data: Any) -> str:
    """A launch made before the report named its space: the first registered space that parses its cells."""
    from searchspaces import SearchSpaceError, get_space, list_spaces

    texts = [g for info in data.seeds.values() for g in info.genotypes.values()] + [data.consensus_genotype]
    for text in filter(None, texts):
        for name in list_spaces():
            try:
                get_space(name).parse_genotype(text)
            except (SearchSpaceError, ValueError):
                continue
            return name
    raise EvaluateError("the launch report names no search space and holds no cells")


def prepare_evaluation(options: EvaluateOptions) -> EvaluationSpec:
    """Resolve and check every input and size every cell; no Ray, no MLflow writes, no training."""
    from ostr_ray.retrain.network import build_network, measure_network
    from ostr_ray.retrain.spec import check_batch, check_data, check_size, protocol_config

    check_options(options)
    selectors = parse_selectors(options.cells)
    place, recipe = options.placement, options.recipe
    launch = resolve_launch(options.launch, place.tracking_uri)
    variant, found = launch_cells(launch, options.variant, options.criterion)
    config = protocol_config(recipe, found.space)
    scheduler = scheduler_settings(options.screening, config.epochs)
    info = check_data(recipe.dataset, recipe.data_dir, config, dry_run=options.dry_run)
    check_batch(config, info, 1)

    def size_of(genotype: Any) -> dict[str, Any]:
        return measure_network(build_network(found.space, genotype, config, info.num_classes), config.flops_resolution)

    def fits(genotype: Any) -> bool:
        limit = config.max_mult_adds_m
        return recipe.allow_large or not limit or size_of(genotype)["mult_adds_m"] <= limit

    notes: list[str] = []
    cells = select_cells(selectors, found, random_seed=options.random_seed, accept=fits, notes=notes)
    records = []
    for cell in cells:
        size = size_of(cell.genotype)
        check_size(size, config, recipe.allow_large)
        records.append(_cell_record(cell, size))
    _add_benchmark(records, found.space, options.nb201_table or _launch_table(launch, variant), notes)
    return EvaluationSpec(
        launch_path=launch.path,
        variant=variant,
        space=found.space,
        criterion=found.criterion,
        selectors=options.cells or ["consensus", "criteria"],
        seeds=list(range(options.seeds)),
        random_seed=options.random_seed,
        dataset=recipe.dataset,
        data_dir=str(Path(recipe.data_dir).expanduser().resolve()) if recipe.data_dir else None,
        num_classes=info.num_classes,
        config=config.to_dict(),
        cells=records,
        cpus_per_run=place.cpus_per_run,
        gpus_per_run=place.gpus_per_run,
        max_failures=place.max_failures,
        tracking_uri=place.tracking_uri,
        scheduler=scheduler,
        notes=notes,
    )


def _cell_record(cell: Cell, size: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": cell.id,
        "genotype": cell.genotype.to_str(),
        "genotype_json": cell.genotype.to_json(),
        "credits": [c.to_json() for c in cell.credits],
        "selectors": cell.groups,
        "size": {k: size[k] for k in ("params_m", "mult_adds_m", "flops_resolution") if k in size},
    }


def _launch_table(launch: LaunchDir, variant: str) -> str | None:
    from ostr_ray.evidence.loading import resolve_table_path

    spec = launch.read_spec(required=False)
    value = spec.variants.get(variant, {}).get("nb201_table") if spec else None
    found = resolve_table_path(value, launch.path) if value else None
    return str(found) if found else None


def _add_benchmark(records: list[dict[str, Any]], space: str, table: str | None, notes: list[str]) -> None:
    """NB201 cells: the benchmark's metrics of each cell beside its retrained accuracy."""
    from ostr_ray.evidence.stats import has_nb201_cells

    if not table or not has_nb201_cells(space):
        return
    from ostr_ray.core.nb201_bench import load_nb201_table

    bench = load_nb201_table(table)
    for record in records:
        record["benchmark"] = bench.lookup(record["genotype"])
    notes.append(f"benchmark accuracies from {table}")
