"""Training protocols: :class:`RetrainConfig`, the ``launch/protocols/*.yaml`` recipes, ``--set`` overrides,
validation and the lr schedule. Pure configuration: no torch, Ray or MLflow."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostr_ray.core.config import ConfigError, launch_data_dir, list_yaml_names, load_yaml_mapping, parse_override
from ostr_ray.core.fieldtypes import checked_fields

SCHEDULES = ("cosine", "linear", "constant")
AUGMENTS = ("none", "randaugment")


class RetrainError(ValueError):
    """Bad retrain input, one line naming the bad value; raised before any training starts."""


@dataclass
class RetrainConfig:
    """One retraining recipe. Protocol YAMLs give every field; ``--set key=value`` overrides any of them."""

    protocol: str = "custom"
    description: str = ""
    spaces: list[str] = field(default_factory=list)
    """The spaces whose genotypes this recipe trains; empty = any."""
    network_kind: str = "cifar"
    """DARTS network: ``cifar`` (NetworkCIFAR) or ``imagenet`` (NetworkImageNet)."""
    network: dict[str, Any] = field(default_factory=dict)
    """Eval-network size arguments (NB201: C, N; DARTS: C, layers, auxiliary)."""
    epochs: int = 1
    batch_size: int = 64
    """Global batch: each of the W workers trains on ``batch_size / W`` images per step."""
    lr: float = 0.025
    lr_min: float = 0.0
    lr_reference_batch: int | None = None
    """When set, the lr is ``lr * batch_size / lr_reference_batch`` (linear scaling rule)."""
    schedule: str = "cosine"
    warmup_epochs: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.0
    drop_path_prob: float = 0.0
    grad_clip: float = 0.0
    """Max gradient norm; 0 disables clipping."""
    crop_padding: int = 4
    horizontal_flip: bool = True
    cutout: int = 0
    augment: str = "none"
    image_size: int | None = None
    """Training/test resolution; None keeps the data set's own (32 for CIFAR). Streaming ImageNet: 224."""
    flops_resolution: int = 32
    max_mult_adds_m: float | None = None
    """Refuse bigger networks (ImageNet mobile setting: 600) unless --allow-large."""
    num_classes: int | None = None
    """Only for ``synthetic`` (default 10); other data sets know their classes."""
    train_subset: int | None = None
    """Class-balanced subset of the training images (in-memory data sets), for quick checks."""
    test_subset: int | None = None
    eval_batch_size: int = 256
    loader_workers: int | None = None
    """Streaming loader processes per worker; None = cpus per worker - 1 (at least 1)."""
    download: bool = False
    seed: int = 0
    amp: bool = True
    """bf16 autocast, on GPU workers only."""
    channels_last: bool = True
    """channels_last memory format, on GPU workers only."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(RetrainConfig)}


def protocol_dir() -> Path:
    return launch_data_dir("protocols")


def list_protocols() -> list[str]:
    return list_yaml_names(protocol_dir())


def load_protocol(name: str) -> dict[str, Any]:
    """The protocol's raw mapping; ``name`` may also be a path to a YAML file."""
    return {"protocol": Path(name).stem, **load_yaml_mapping(name, protocol_dir(), "protocol", RetrainError)}


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs (YAML values); ``network.C=8`` sets one network argument."""
    values: dict[str, Any] = {}
    for text in items or []:
        try:
            key, value = parse_override(text)
        except ConfigError:
            raise RetrainError(f"--set {text!r} is not key=value") from None
        if key.startswith("network."):
            values.setdefault("network", {})[key.removeprefix("network.")] = value
        elif key == "network" and isinstance(value, dict):
            values.setdefault("network", {}).update(value)
        else:
            values[key] = value
    return values


def build_retrain_config(
    protocol: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    augment: str | None = None,
    epochs: int | None = None,
) -> RetrainConfig:
    """protocol <- ``--augment`` (RandAugment doubles the epochs: the papers' "(Aug)" rows) <- ``--set``
    <- ``--epochs``; validated."""
    values = load_protocol(protocol)
    if augment not in (None, "none"):
        if augment not in AUGMENTS:
            raise RetrainError(f"unknown --augment {augment!r}; choose from {', '.join(AUGMENTS)}")
        values["augment"] = augment
        values["epochs"] = 2 * int(values.get("epochs", 1))
    for key, value in (overrides or {}).items():
        if key == "network" and isinstance(value, dict):
            values["network"] = {**values.get("network", {}), **value}
        else:
            values[key] = value
    if epochs is not None:
        values["epochs"] = epochs
    return config_from_dict(values)


def config_from_dict(values: Mapping[str, Any]) -> RetrainConfig:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise RetrainError(f"unknown retrain setting {unknown[0]!r}; known: {', '.join(sorted(_FIELDS))}")
    try:
        config = RetrainConfig(**checked_fields(RetrainConfig, dict(values)))
    except (TypeError, ValueError) as exc:
        raise RetrainError(f"retrain setting {exc}") from None
    _validate(config)
    return config


def _validate(c: RetrainConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise RetrainError(message)

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(is_int(c.epochs) and c.epochs >= 1, f"epochs must be an int >= 1, got {c.epochs!r}")
    need(is_int(c.batch_size) and c.batch_size >= 1, f"batch_size must be an int >= 1, got {c.batch_size!r}")
    need(c.schedule in SCHEDULES, f"unknown schedule {c.schedule!r}; choose from {', '.join(SCHEDULES)}")
    need(c.augment in AUGMENTS, f"unknown augment {c.augment!r}; choose from {', '.join(AUGMENTS)}")
    need(c.network_kind in ("cifar", "imagenet"), f"network_kind must be cifar or imagenet, got {c.network_kind!r}")
    need(isinstance(c.network, dict), f"network must be a mapping, got {c.network!r}")
    for name in ("lr", "eval_batch_size", "flops_resolution"):
        need(isinstance(getattr(c, name), int | float) and getattr(c, name) > 0, f"{name} must be > 0")
    for name in ("lr_min", "weight_decay", "momentum", "auxiliary_weight", "grad_clip", "label_smoothing"):
        need(isinstance(getattr(c, name), int | float) and getattr(c, name) >= 0, f"{name} must be >= 0")
    for name in ("warmup_epochs", "crop_padding", "cutout"):
        need(is_int(getattr(c, name)) and getattr(c, name) >= 0, f"{name} must be an int >= 0")
    need(0 <= c.drop_path_prob < 1, f"drop_path_prob must be in [0, 1), got {c.drop_path_prob!r}")
    need(c.label_smoothing < 1, f"label_smoothing must be < 1, got {c.label_smoothing!r}")
    need(c.warmup_epochs < c.epochs or c.warmup_epochs == 0, f"warmup_epochs {c.warmup_epochs} >= epochs")
    for name in ("image_size", "num_classes", "train_subset", "test_subset", "lr_reference_batch"):
        value = getattr(c, name)
        need(value is None or (is_int(value) and value >= 1), f"{name} must be None or an int >= 1, got {value!r}")
    need(c.loader_workers is None or (is_int(c.loader_workers) and c.loader_workers >= 0), "loader_workers >= 0")
    need(c.max_mult_adds_m is None or c.max_mult_adds_m > 0, "max_mult_adds_m must be None or > 0")


def effective_lr(config: RetrainConfig) -> float:
    """The peak lr after linear batch scaling (when the protocol has a reference batch)."""
    if config.lr_reference_batch:
        return config.lr * config.batch_size / config.lr_reference_batch
    return config.lr


def lr_factor(config: RetrainConfig, epoch: int) -> float:
    """Multiplier of the peak lr during ``epoch`` (0-based), constant within an epoch as in DARTS.

    Warm-up: ``(epoch + 1) / W`` for the first W epochs. Then over the remaining ``T = epochs - W`` epochs
    (``t = epoch - W``): cosine ``m + (1 - m)(1 + cos(pi t / T)) / 2`` with ``m = lr_min / lr`` (torch's
    CosineAnnealingLR stepped per epoch), linear ``1 - t / T`` (PC-DARTS), or constant.
    """
    warm = config.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / warm
    t, total = epoch - warm, max(1, config.epochs - warm)
    floor = config.lr_min / effective_lr(config)
    if config.schedule == "cosine":
        return floor + (1 - floor) * (1 + math.cos(math.pi * t / total)) / 2
    if config.schedule == "linear":
        return max(floor, 1 - t / total)
    return 1.0
