"""The checks that need no Ray (data tree, batch split, model size) and the :class:`RetrainSpec` they produce,
saved as ``retrain.json`` in the run directory."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.data import DATASETS, DataError, check_data_source, class_folder_check, class_names, get_source, split_dir
from ostr_ray.experiment.layout import DEFAULT_STORAGE, RETRAIN_SPEC
from ostr_ray.fileio import atomic_write_text
from ostr_ray.retrain.genotypes import resolve_genotype
from ostr_ray.retrain.network import build_network, measure_network
from ostr_ray.retrain.options import RetrainOptions, RetrainRecipe
from ostr_ray.retrain.protocols import (
    RetrainConfig,
    RetrainError,
    build_retrain_config,
    config_from_dict,
    effective_lr,
)

SPEC_FILE = RETRAIN_SPEC
# DATASETS: the data registry's names (ostr_ray.data.sources); ``imagenet`` is a class-folder tree streamed
# from disk, ``imagefolder`` one decoded into memory once.


# ------------------------------------------------------------------------------------------- data checks


@dataclass
class DataInfo:
    num_classes: int
    train_images: int
    test_images: int
    streaming: bool


def check_data(dataset: str, data_dir: str | None, config: RetrainConfig, *, dry_run: bool = False) -> DataInfo:
    """Cheap pre-flight of the data (folders and counts, no decoding): a wrong --data-dir fails here.

    A dry run needs no data on disk (sizing a network needs no images): the data set's registered class and
    image counts stand in, and an absent tree counts as ImageNet's."""
    if dataset not in DATASETS:
        raise RetrainError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    source = get_source(dataset)
    if config.num_classes is not None and dataset != "synthetic":
        raise RetrainError(f"num_classes applies to the synthetic data set only, not {dataset!r}")
    tree_present = bool(data_dir) and Path(data_dir).is_dir()
    if source.folder and (tree_present or not dry_run):
        if not data_dir:
            raise RetrainError(f"dataset {dataset!r} needs --data-dir pointing at a class-folder tree")
        info = _tree_info(Path(data_dir), streaming=source.streams)
    else:
        if not dry_run:
            check_data_source(dataset, data_dir, download=config.download)
        train, test = source.sizes or (1281167, 50000)
        info = DataInfo(config.num_classes or source.num_classes or 1000, train, test, streaming=source.streams)
    if config.train_subset:
        info.train_images = min(info.train_images, config.train_subset)
    if config.test_subset:
        info.test_images = min(info.test_images, config.test_subset)
    return info


def _tree_info(root: Path, *, streaming: bool) -> DataInfo:
    train, test = split_dir(root, train=True), split_dir(root, train=False)
    n_train, n_test = class_folder_check(train), class_folder_check(test)
    classes, test_classes = class_names(train), class_names(test)
    if classes != test_classes:
        raise DataError(f"{train} and {test} have different class folders ({len(classes)} vs {len(test_classes)})")
    return DataInfo(len(classes), n_train, n_test, streaming=streaming)


# ------------------------------------------------------------------------------------------- the spec


@dataclass
class RetrainSpec:
    """Everything one retrain needs, resolved and checked; saved as ``retrain.json`` in the run dir."""

    space: str
    genotype: str
    genotype_json: dict[str, Any]
    source: dict[str, Any]
    dataset: str
    data_dir: str | None
    config: dict[str, Any]
    num_classes: int
    size: dict[str, Any]
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    storage: str = ""
    name: str = ""
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    debug: dict[str, Any] = field(default_factory=dict)
    """Test hooks for the workers (``pid_dir``, ``hold_after_epoch``); empty in normal runs."""

    @property
    def run_dir(self) -> Path:
        return Path(self.storage) / self.name

    def retrain_config(self) -> RetrainConfig:
        return config_from_dict(self.config)

    def summary(self) -> dict[str, Any]:
        """The dry-run / JSON view: what will be trained, and its size."""
        config = self.retrain_config()
        return {
            "space": self.space,
            "genotype": self.genotype,
            "source": self.source,
            "protocol": config.protocol,
            "network": {"kind": config.network_kind, **config.network, "num_classes": self.num_classes},
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            **{k: v for k, v in self.size.items()},
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "per_worker_batch": config.batch_size // self.workers,
            "lr": effective_lr(config),
            "augment": config.augment,
            "workers": self.workers,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "run_dir": str(self.run_dir),
        }


def _check_resources(options: RetrainOptions) -> None:
    workers, cpus, gpus = options.placement.resources()
    if workers < 1:
        raise RetrainError(f"--workers must be >= 1, got {workers}")
    if cpus <= 0 or gpus < 0:
        raise RetrainError(f"resources per worker must be positive (cpus {cpus}, gpus {gpus})")
    if gpus > 1:
        raise RetrainError(f"--gpus-per-worker {gpus}: a DDP worker drives at most one GPU")
    if options.placement.max_failures < -1:
        raise RetrainError(f"--max-failures must be >= -1 (-1 = unlimited), got {options.placement.max_failures}")
    if options.recipe.dataset not in DATASETS:
        raise RetrainError(f"unknown dataset {options.recipe.dataset!r}; choose from {', '.join(DATASETS)}")


def default_protocol(space: str, dataset: str) -> str:
    """The space's registered protocol for ``dataset`` (its ``default_protocols`` entry)."""
    from searchspaces import get_space

    protocol = get_space(space).protocol_for(dataset)
    if protocol is None:
        raise RetrainError(f"space {space!r} names no retraining protocol; pass --protocol")
    return protocol


def protocol_config(recipe: RetrainRecipe, space: str) -> RetrainConfig:
    """The recipe's protocol (default: the space's for the data set) with its overrides, checked to fit the space
    and the data set (``ostr-ray evaluate`` builds its runs' recipe here too)."""
    protocol = recipe.protocol or default_protocol(space, recipe.dataset)
    config = build_retrain_config(protocol, recipe.overrides(), augment=recipe.augment, epochs=recipe.epochs)
    if config.spaces and space not in config.spaces:
        raise RetrainError(
            f"protocol {config.protocol!r} trains {', '.join(config.spaces)} genotypes, not {space!r}; "
            f"use --protocol {default_protocol(space, recipe.dataset)}"
        )
    if get_source(recipe.dataset).streams and config.crop_padding:
        raise RetrainError(f"streamed {recipe.dataset} data uses RandomResizedCrop; set crop_padding=0")
    return config


def check_batch(config: RetrainConfig, info: DataInfo, workers: int) -> None:
    if config.batch_size % workers:
        raise RetrainError(f"batch_size {config.batch_size} does not split evenly over {workers} workers")
    per_worker = config.batch_size // workers
    if per_worker > info.train_images // workers:
        raise RetrainError(
            f"per-worker batch {per_worker} exceeds the {info.train_images // workers} training images per worker"
        )


def check_size(size: dict[str, Any], config: RetrainConfig, allow_large: bool) -> None:
    """Refuse a network over the protocol's mobile-setting limit unless ``allow_large``."""
    if config.max_mult_adds_m and size["mult_adds_m"] > config.max_mult_adds_m and not allow_large:
        res = config.flops_resolution
        raise RetrainError(
            f"{size['mult_adds_m']:.1f}M multiply-adds at {res}x{res} exceeds "
            f"the {config.protocol} limit of {config.max_mult_adds_m:g}M (mobile setting); pass --allow-large"
        )


def prepare_retrain(options: RetrainOptions) -> RetrainSpec:
    """Resolve and check every input and measure the network; no Ray, no MLflow writes, no training."""
    from ostr_ray.tracking.store import TrackingError, resolve_tracking_uri

    if not options.genotype:
        raise RetrainError("missing GENOTYPE (or --resume RUN_DIR)")
    recipe, place = options.recipe, options.placement
    _check_resources(options)
    storage_root = Path(place.storage or DEFAULT_STORAGE).expanduser().resolve()
    try:
        lookup_uri = resolve_tracking_uri(place.tracking_uri, str(storage_root))
    except TrackingError as exc:
        raise RetrainError(str(exc)) from None
    space, genotype, source = resolve_genotype(
        options.genotype,
        criterion=options.source.criterion,
        seed=options.source.seed,
        variant=options.source.variant,
        tracking_uri=lookup_uri,
    )
    config = protocol_config(recipe, space)
    info = check_data(recipe.dataset, recipe.data_dir, config, dry_run=options.dry_run)
    workers, cpus_per_worker, gpus_per_worker = place.resources()
    check_batch(config, info, workers)
    size = measure_network(build_network(space, genotype, config, info.num_classes), config.flops_resolution)
    check_size(size, config, recipe.allow_large)
    return RetrainSpec(
        space=space,
        genotype=genotype.to_str(),
        genotype_json=genotype.to_json(),
        source=source,
        dataset=recipe.dataset,
        data_dir=str(Path(recipe.data_dir).expanduser().resolve()) if recipe.data_dir else None,
        config=config.to_dict(),
        num_classes=info.num_classes,
        size=size,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        max_failures=place.max_failures,
        storage=str(storage_root),
        name=place.name or f"retrain-{space}-{config.protocol}-{time.strftime('%Y%m%d-%H%M%S')}",
        # a launch dir's own store, so the retrain run lands beside (and nests under) its search runs
        tracking_uri=place.tracking_uri or source.get("tracking_uri"),
    )


def load_spec(run_dir: str | os.PathLike[str]) -> RetrainSpec:
    path = Path(run_dir).expanduser() / SPEC_FILE
    if not path.is_file():
        raise RetrainError(f"no {SPEC_FILE} in {run_dir}; is it an ostr-ray retrain run directory?")
    return RetrainSpec(**json.loads(path.read_text()))


def _save_spec(spec: RetrainSpec) -> None:
    atomic_write_text(spec.run_dir / SPEC_FILE, json.dumps(dataclasses.asdict(spec), indent=1))
