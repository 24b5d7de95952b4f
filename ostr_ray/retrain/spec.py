"""The checks that need no Ray (data tree, batch split, model size) and the :class:`RetrainSpec` they produce,
saved as ``retrain.json`` in the run directory."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.data import DataError
from ostr_ray.retrain.genotypes import resolve_genotype
from ostr_ray.retrain.network import build_network, measure_network
from ostr_ray.retrain.protocols import (
    RetrainConfig,
    RetrainError,
    build_retrain_config,
    config_from_dict,
    default_protocol,
    effective_lr,
)

SPEC_FILE = "retrain.json"
DATASETS = ("cifar10", "cifar100", "imagenet", "imagefolder", "digits", "synthetic")
"""``imagenet`` is a class-folder tree streamed from disk; ``imagefolder`` is decoded into memory once."""


# ------------------------------------------------------------------------------------------- data checks


@dataclass
class DataInfo:
    num_classes: int
    train_images: int
    test_images: int
    streaming: bool


def _split_dirs(root: Path) -> tuple[Path, Path]:
    if not root.is_dir():
        raise DataError(f"data dir {root} " + ("is not a directory" if root.exists() else "does not exist"))
    train = root / "train" if (root / "train").is_dir() else root
    for sub in ("test", "val"):
        if (root / sub).is_dir():
            return train, root / sub
    raise DataError(f"data dir {root} has no test/ or val/ class-folder tree to evaluate on")


def check_data(dataset: str, data_dir: str | None, config: RetrainConfig, *, dry_run: bool = False) -> DataInfo:
    """Cheap pre-flight of the data (folders and counts, no decoding): a wrong --data-dir fails here.

    A dry run may omit the ImageNet tree (sizing a network needs no images): 1000 classes are assumed."""
    from ostr_ray.data import check_data_source, class_folder_check

    if dry_run and dataset == "imagenet" and not data_dir:
        return DataInfo(1000, 1281167, 50000, streaming=True)

    if dataset not in DATASETS:
        raise RetrainError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if config.num_classes is not None and dataset != "synthetic":
        raise RetrainError(f"num_classes applies to the synthetic data set only, not {dataset!r}")
    if dataset in ("imagefolder", "imagenet"):
        if not data_dir:
            raise RetrainError(f"dataset {dataset!r} needs --data-dir pointing at a class-folder tree")
        train, test = _split_dirs(Path(data_dir))
        n_train, n_test = class_folder_check(train), class_folder_check(test)
        classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
        test_classes = sorted(e.name for e in os.scandir(test) if e.is_dir() and not e.name.startswith("."))
        if classes != test_classes:
            raise DataError(f"{train} and {test} have different class folders ({len(classes)} vs {len(test_classes)})")
        info = DataInfo(len(classes), n_train, n_test, streaming=dataset == "imagenet")
    elif dataset in ("cifar10", "cifar100"):
        check_data_source(dataset, data_dir, download=config.download)
        info = DataInfo(10 if dataset == "cifar10" else 100, 50000, 10000, False)
    elif dataset == "digits":
        info = DataInfo(10, 1500, 297, False)
    else:
        info = DataInfo(config.num_classes or 10, 512, 128, False)
    if config.train_subset:
        info.train_images = min(info.train_images, config.train_subset)
    if config.test_subset:
        info.test_images = min(info.test_images, config.test_subset)
    return info


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


def prepare_retrain(
    genotype_text: str,
    *,
    dataset: str,
    data_dir: str | None = None,
    protocol: str | None = None,
    augment: str | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_failures: int = 2,
    allow_large: bool = False,
    criterion: str | None = None,
    seed: int | None = None,
    variant: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    tracking_uri: str | None = None,
    dry_run: bool = False,
) -> RetrainSpec:
    """Resolve and check every input and measure the network; no Ray, no MLflow writes, no training."""
    if workers < 1:
        raise RetrainError(f"--workers must be >= 1, got {workers}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise RetrainError(f"resources per worker must be positive (cpus {cpus_per_worker}, gpus {gpus_per_worker})")
    if gpus_per_worker > 1:
        raise RetrainError(f"--gpus-per-worker {gpus_per_worker}: a DDP worker drives at most one GPU")
    if max_failures < -1:
        raise RetrainError(f"--max-failures must be >= -1 (-1 = unlimited), got {max_failures}")
    if dataset not in DATASETS:
        raise RetrainError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    from ostr_ray.tracking.recorder import TrackingError, resolve_tracking_uri

    storage_root = Path(storage or "ostr_runs").expanduser().resolve()
    try:
        lookup_uri = resolve_tracking_uri(tracking_uri, str(storage_root))
    except TrackingError as exc:
        raise RetrainError(str(exc)) from None
    space, genotype, source = resolve_genotype(
        genotype_text, criterion=criterion, seed=seed, variant=variant, tracking_uri=lookup_uri
    )
    protocol = protocol or default_protocol(space, dataset)
    config = build_retrain_config(protocol, overrides, augment=augment, epochs=epochs)
    if space not in config.spaces:
        raise RetrainError(
            f"protocol {config.protocol!r} trains {', '.join(config.spaces)} genotypes, not {space!r}; "
            f"use --protocol {default_protocol(space, dataset)}"
        )
    if dataset == "imagenet" and config.crop_padding:
        raise RetrainError("streamed ImageNet uses RandomResizedCrop; set crop_padding=0")
    info = check_data(dataset, data_dir, config, dry_run=dry_run)
    if config.batch_size % workers:
        raise RetrainError(f"batch_size {config.batch_size} does not split evenly over {workers} workers")
    per_worker = config.batch_size // workers
    if per_worker > info.train_images // workers:
        raise RetrainError(
            f"per-worker batch {per_worker} exceeds the {info.train_images // workers} training images per worker"
        )
    model = build_network(space, genotype, config, info.num_classes)
    size = measure_network(model, config.flops_resolution)
    if config.max_mult_adds_m and size["mult_adds_m"] > config.max_mult_adds_m and not allow_large:
        raise RetrainError(
            f"{size['mult_adds_m']:.1f}M multiply-adds at {config.flops_resolution}x{config.flops_resolution} exceeds "
            f"the {config.protocol} limit of {config.max_mult_adds_m:g}M (mobile setting); pass --allow-large"
        )
    return RetrainSpec(
        space=space,
        genotype=genotype.to_str(),
        genotype_json=genotype.to_json(),
        source=source,
        dataset=dataset,
        data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        config=config.to_dict(),
        num_classes=info.num_classes,
        size=size,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        max_failures=max_failures,
        storage=str(storage_root),
        name=name or f"retrain-{space}-{config.protocol}-{time.strftime('%Y%m%d-%H%M%S')}",
        # a launch dir's own store, so the retrain run lands beside (and nests under) its search runs
        tracking_uri=tracking_uri or source.get("tracking_uri"),
    )


def load_spec(run_dir: str | os.PathLike[str]) -> RetrainSpec:
    path = Path(run_dir).expanduser() / SPEC_FILE
    if not path.is_file():
        raise RetrainError(f"no {SPEC_FILE} in {run_dir}; is it an ostr-ray retrain run directory?")
    return RetrainSpec(**json.loads(path.read_text()))


def _save_spec(spec: RetrainSpec) -> None:
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = spec.run_dir / (SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(spec), indent=1))
    os.replace(tmp, spec.run_dir / SPEC_FILE)
