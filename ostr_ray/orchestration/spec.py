"""From command-line input to a validated :class:`~ostr_ray.experiment.LaunchSpec`, before Ray starts.

Every check that can fail on bad input runs here (seeds, variants, resources, data, tables, tracking), so a
mistake costs one line and exit status 2 instead of a cluster start and five failed trials.

The launch's settings are declared here, once: :class:`LaunchOptions` and its groups (:class:`DataOptions`, shared
with ``ostr-ray search``, :class:`StopOptions`, :class:`ClusterOptions`) carry their flags' help text as field
metadata; the CLI expands them into its options and hands the filled object to :func:`build_spec` as it is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.core.config import build_config, list_presets, parse_override
from ostr_ray.core.fieldtypes import option
from ostr_ray.experiment import LaunchSpec
from ostr_ray.experiment.layout import DEFAULT_STORAGE
from ostr_ray.experiment.storage import is_uri, join, resolve
from searchspaces import get_space, list_spaces


class LaunchError(ValueError):
    """Bad launch input (seeds, variants, resources, cluster address); one line, before any trial."""


@dataclass
class DataOptions:
    """What data a search reads, over the preset's: the data flags of ``ostr-ray launch`` and ``search``."""

    dataset: str | None = option(None, "cifar10, cifar100, imagenet (streamed tree), imagefolder, digits, synthetic.")
    data_dir: str | None = option(None, "Data root (class-folder tree for imagefolder).")
    download: bool = option(False, "Download torchvision data sets when missing.")
    epochs: int | None = option(None, "Override the preset's epochs.")
    nb201_table: str | None = option(None, "NB201 ground-truth table (CSV or NATS) for every epoch.")
    set_: list[str] | None = option(None, "Any setting as key=value (YAML value).", "--set")

    def overrides(self, **more: Any) -> dict[str, Any]:
        """The search settings these options override: ``--set`` first, then the named flags and ``more``
        (an unset flag, None, overrides nothing)."""
        values = dict(parse_override(s) for s in self.set_ or [])
        flags = dict(
            dataset=self.dataset,
            data_dir=self.data_dir,
            download=self.download or None,
            epochs=self.epochs,
            nb201_table=self.nb201_table,
            **more,
        )
        values.update({k: v for k, v in flags.items() if v is not None})
        return values


@dataclass
class StopOptions:
    """Algorithm 1 per seed and the consensus stop of a launch."""

    criterion: str | None = option(None, "Criterion the stability rules watch (default: the preset's).")
    """Overrides every variant's criterion (else each keeps its preset's)."""
    patience: int | None = option(None, "C: epochs a genotype must hold (0 = run all).")
    """Overrides every variant's patience (else each keeps its preset's)."""
    agreement: float = option(0.8, "Share of seeds that must agree to stop the launch.")
    seed_stop: bool = option(True, "Per-seed Algorithm 1.")
    experiment_stop: bool = option(True, "Stop all once the consensus held.")


@dataclass
class ClusterOptions:
    """Where a launch runs and records."""

    address: str | None = option(None, "Join a running Ray cluster ('auto'); else start one.")
    """Used by the run, not the spec: ``--resume`` may join another cluster than the launch did."""
    storage: str | None = option(None, "Experiment storage: a path or s3://... URI.")
    name: str | None = option(None, "Experiment name (a folder under --storage).")
    tracking_uri: str | None = option(None, "MLflow tracking URI.")
    cpus_per_trial: float = option(1.0, "CPUs per trial (also torch's threads).")
    gpus_per_trial: float = option(0.0, "GPUs per trial; 0.25 packs four seeds per GPU.")
    max_failures: int = option(2, "Retries of a failed trial from its last checkpoint.")
    seeds_per_trial: int = option(1, "Seeds searched as one batched model per trial (one kernel serves them all).")
    """See core/step.py: one step over the stacked supernets of the trial's seeds."""


@dataclass
class LaunchOptions:
    """What a user chooses for a launch: the settings of ``ostr-ray launch`` (see its ``--help``), declared
    once here; the CLI fills them from its flags and :func:`build_spec` resolves and checks them."""

    preset: str = option("demo", "Preset for every trial (see `ostr-ray presets`).")
    seeds: str = option("5", "A count (5 = seeds 0..4) or a list (3,7,11).")
    spaces: str | None = option(None, "Variants: spaces (nb201,darts,pcdarts) or presets.")
    data: DataOptions = field(default_factory=DataOptions)
    stop: StopOptions = field(default_factory=StopOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


def parse_seeds(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"3,7,11"`` -> that list. Empty, negative or duplicate seeds are refused."""
    text = str(text).strip()
    if not text:
        raise LaunchError("--seeds is empty; give a count (5) or a list (3,7,11)")
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise LaunchError(f"--seeds {text!r} is not a count or a comma-separated list of integers") from None
    if len(parts) == 1:
        if numbers[0] < 1:
            raise LaunchError(f"--seeds {text!r}: the number of seeds must be >= 1")
        return list(range(numbers[0]))
    if any(n < 0 for n in numbers):
        raise LaunchError(f"--seeds {text!r}: negative seed {min(numbers)}")
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise LaunchError(f"--seeds {text!r}: duplicate seed {duplicates[0]}")
    return numbers


def _preset_of(name: str) -> str:
    """A space name means its registered default preset; anything else is a preset name or YAML path."""
    if name in list_spaces():
        return get_space(name).default_preset or name
    return name


def resolve_variants(spaces: str | None, preset: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> validated config dict. ``spaces`` lists spaces (nb201) or preset names."""
    names = [n.strip() for n in spaces.split(",")] if spaces else [preset]
    if any(not n for n in names):
        raise LaunchError(f"--spaces {spaces!r} has an empty entry")
    variants = {}
    for name in names:
        preset_name = _preset_of(name)
        if preset_name not in list_presets() and not preset_name.endswith((".yaml", ".yml")):
            raise LaunchError(
                f"unknown space or preset {name!r}; choose from {', '.join([*list_spaces(), *list_presets()])}"
            )
        variants[Path(preset_name).stem] = _absolute_paths(build_config(preset_name, overrides).to_dict())
    return variants


def _absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Trials run in their own working directories: resolve the driver's relative paths now."""
    for key in ("data_dir", "nb201_table"):
        value = config.get(key)
        if value and not is_uri(value):
            config[key] = str(Path(value).expanduser().resolve())
    return config


def check_data_sources(variants: dict[str, dict[str, Any]]) -> None:
    """Cheap existence checks so a wrong --data-dir fails before Ray starts, not inside five trials."""
    from ostr_ray.data import check_data_source

    for config in variants.values():
        check_data_source(config["dataset"], config.get("data_dir"), download=bool(config.get("download")))
        table = config.get("nb201_table")
        if table and not Path(table).exists():
            raise LaunchError(f"--nb201-table {table} does not exist")


def default_name(variants: dict[str, Any]) -> str:
    return f"launch-{'+'.join(variants)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_numbers(stop: StopOptions, cluster: ClusterOptions) -> None:
    if not 0 < stop.agreement <= 1:
        raise LaunchError(f"--agreement {stop.agreement!r} must be in (0, 1]")
    if cluster.gpus_per_trial < 0 or cluster.cpus_per_trial <= 0:
        raise LaunchError(
            f"resources per trial must be positive (cpus {cluster.cpus_per_trial!r}, gpus {cluster.gpus_per_trial!r})"
        )
    if cluster.max_failures < 0:
        raise LaunchError(f"--max-failures {cluster.max_failures!r} must be >= 0")
    if cluster.seeds_per_trial < 1:
        raise LaunchError(f"--seeds-per-trial {cluster.seeds_per_trial!r} must be >= 1")


def _check_groups(variants: dict[str, dict[str, Any]], seeds: list[int], per_trial: int) -> None:
    """A seed group must be one search at several seeds (:func:`~ostr_ray.core.search.check_group`)."""
    if per_trial <= 1:
        return
    from ostr_ray.core.config import config_from_dict
    from ostr_ray.core.search import check_group

    for values in variants.values():
        check_group([config_from_dict({**values, "seed": seed}) for seed in seeds[:per_trial]])


def build_spec(options: LaunchOptions) -> LaunchSpec:
    """Resolve and validate every launch input; raises LaunchError/ConfigError before Ray starts.

    ``--criterion`` / ``--patience`` apply to every variant; without them each variant keeps its preset's,
    and the coordinator watches each variant's own criterion and patience."""
    stop, cluster = options.stop, options.cluster
    seeds = parse_seeds(options.seeds)
    overrides = options.data.overrides(criterion=stop.criterion, patience=stop.patience)
    variants = resolve_variants(options.spaces, options.preset, overrides)
    _check_numbers(stop, cluster)
    _check_groups(variants, seeds, cluster.seeds_per_trial)
    check_data_sources(variants)
    first = next(iter(variants.values()))
    storage = resolve(cluster.storage or DEFAULT_STORAGE)
    spec = LaunchSpec(
        variants=variants,
        seeds=seeds,
        name=cluster.name or default_name(variants),
        storage=storage,
        cpus_per_trial=cluster.cpus_per_trial,
        gpus_per_trial=cluster.gpus_per_trial,
        max_failures=cluster.max_failures,
        criterion=first["criterion"],
        patience=int(first["patience"]),
        agreement=stop.agreement,
        seed_stop=stop.seed_stop,
        experiment_stop=stop.experiment_stop,
        # kept in launch.json, so --resume records into the same MLflow store; None = the launch's own SQLite
        tracking_uri=cluster.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
        seeds_per_trial=cluster.seeds_per_trial,
    )
    if spec.tracking_uri is None and is_uri(join(storage, spec.name)):
        raise LaunchError(
            f"--storage {spec.storage!r} is remote: give --tracking-uri http://<mlflow server> "
            "(or set MLFLOW_TRACKING_URI) for the MLflow record"
        )
    return spec


def variant_criteria(spec: LaunchSpec) -> dict[str, str]:
    return {variant: config["criterion"] for variant, config in spec.variants.items()}


def variant_patience(spec: LaunchSpec) -> dict[str, int]:
    return {variant: int(config.get("patience") or 0) for variant, config in spec.variants.items()}
