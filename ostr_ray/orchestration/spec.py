"""From command-line input to a validated :class:`~ostr_ray.experiment.LaunchSpec`, before Ray starts.

Every check that can fail on bad input runs here (seeds, variants, resources, data, tables, tracking), so a
mistake costs one line and exit status 2 instead of a cluster start and five failed trials.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.core.config import build_config, list_presets
from ostr_ray.experiment import LaunchSpec
from ostr_ray.experiment.storage import is_uri, join, resolve
from searchspaces import get_space, list_spaces


class LaunchError(ValueError):
    """Bad launch input (seeds, variants, resources, cluster address); one line, before any trial."""


@dataclass
class LaunchOptions:
    """What a user chooses for a launch, as the CLI gathers it (see ``ostr-ray launch --help``)."""

    preset: str = "demo"
    spaces: str | None = None
    seeds: str = "5"
    storage: str | None = None
    name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    criterion: str | None = None
    """Overrides every variant's criterion (else each keeps its preset's)."""
    patience: int | None = None
    """Overrides every variant's patience (else each keeps its preset's)."""
    agreement: float = 0.8
    seed_stop: bool = True
    experiment_stop: bool = True
    tracking_uri: str | None = None
    seeds_per_trial: int = 1
    """Seeds searched as one batched model per trial (one kernel serves them all; see core/step.py)."""


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


def _check_numbers(options: LaunchOptions) -> None:
    if not 0 < options.agreement <= 1:
        raise LaunchError(f"--agreement {options.agreement!r} must be in (0, 1]")
    if options.gpus_per_trial < 0 or options.cpus_per_trial <= 0:
        raise LaunchError(
            f"resources per trial must be positive (cpus {options.cpus_per_trial!r}, gpus {options.gpus_per_trial!r})"
        )
    if options.max_failures < 0:
        raise LaunchError(f"--max-failures {options.max_failures!r} must be >= 0")
    if options.seeds_per_trial < 1:
        raise LaunchError(f"--seeds-per-trial {options.seeds_per_trial!r} must be >= 1")


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
    seeds = parse_seeds(options.seeds)
    overrides = dict(options.overrides)
    if options.criterion is not None:
        overrides["criterion"] = options.criterion
    if options.patience is not None:
        overrides["patience"] = options.patience
    variants = resolve_variants(options.spaces, options.preset, overrides)
    _check_numbers(options)
    _check_groups(variants, seeds, options.seeds_per_trial)
    check_data_sources(variants)
    first = next(iter(variants.values()))
    storage = resolve(options.storage or "ostr_runs")
    spec = LaunchSpec(
        variants=variants,
        seeds=seeds,
        name=options.name or default_name(variants),
        storage=storage,
        cpus_per_trial=options.cpus_per_trial,
        gpus_per_trial=options.gpus_per_trial,
        max_failures=options.max_failures,
        criterion=first["criterion"],
        patience=int(first["patience"]),
        agreement=options.agreement,
        seed_stop=options.seed_stop,
        experiment_stop=options.experiment_stop,
        # kept in launch.json, so --resume records into the same MLflow store; None = the launch's own SQLite
        tracking_uri=options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
        seeds_per_trial=options.seeds_per_trial,
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
