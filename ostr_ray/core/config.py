"""One seed's search settings: a flat dataclass, named presets kept as YAML data in ``launch/presets``.

A preset is a partial mapping over :class:`SearchConfig`'s defaults; CLI flags and ``--set key=value``
overrides go on top. Everything is validated here, before any data is read or any model is built, so bad
input costs nothing and fails with one line naming the bad value.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ostr_ray.core.criteria import DEFAULT_CRITERION
from ostr_ray.core.fieldtypes import checked_fields
from ostr_ray.data import DATASETS, DataError, check_data_path, get_source
from searchspaces import SearchSpace, SearchSpaceError, get_space
from searchspaces.nb201_genotype import NB201_NONE_MODES

ORDERS = ("first", "second", "single")
AMP_MODES = ("auto", "off", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
AUGMENTS = ("pad_crop", "random_resized_crop")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A bad setting; the message names the key and the value."""


@dataclass
class SearchConfig:
    """Everything that defines one seed's search. Defaults follow DARTS / NB201 (first order)."""

    # what to search
    space: str = "nb201"
    space_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    train_size: int | None = None
    """Cap on the weight-training half (None = the whole half); the CPU proxy uses 5,000."""
    val_size: int | None = None
    subset_fraction: float | None = None
    """Class-balanced fraction of the training set searched on (PC-DARTS ImageNet: 0.125)."""
    train_fraction: float = 0.5
    """Share of the searched images that train the weights; the rest train alpha (PC-DARTS ImageNet: 0.8)."""
    crop_padding: int = 4
    horizontal_flip: bool = True
    cutout: int = 0
    augment: str = "pad_crop"
    """Crop of both streams: ``pad_crop`` (DARTS/NB201: random crop_padding-padded crop, native size) or
    ``random_resized_crop`` (PC-DARTS ImageNet: torchvision's RandomResizedCrop to image_size); flip and
    cutout per their own settings."""
    data_path: str = "auto"
    """How images reach the search: ``memory`` decodes the searched images once into RAM and augments whole
    batches on the device (fastest; NB201, CIFAR); ``stream`` decodes JPEGs per batch in DataLoader workers, so
    RAM holds only the batches in flight (ImageNet-scale trees); ``auto`` streams class-folder trees at
    image_size >= 128 or whose decoded subset would pass the memory budget (ostr_ray/core/search_data.py)."""
    loader_workers: int | None = None
    """DataLoader worker processes per stream on the streamed path (None = from the CPUs, 0 = decode in the
    search's own process); the batches do not depend on it."""
    # schedule
    epochs: int = 50
    batch_size: int = 64
    order: str = "first"
    arch_start_epoch: int = 0
    """Epochs of weight-only warm-up before the architecture steps start (PC-DARTS: 15)."""
    # weight optimiser (SGD, cosine)
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    w_lr_warmup_epochs: int = 0
    """Linear warm-up: epoch e < W trains at w_lr * (e + 1) / W, then the cosine schedule (PC-DARTS ImageNet: 5)."""
    # architecture optimiser (Adam)
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_weight_decay: float = 1e-3
    a_grad_clip: float = 0.0
    """Max norm of the architecture gradient before the Adam step; 0 = off (PC-DARTS ImageNet: 5). Strength is
    read before clipping."""
    # selection and Algorithm 1
    criterion: str = DEFAULT_CRITERION
    patience: int = 0
    """Stop once the selected criterion's genotype is unchanged for this many epochs; 0 disables."""
    min_epochs: int = 0
    tie_se: float = 0.0
    """An edge whose two leading ops are within tie_se standard errors does not count as a change (0 = off)."""
    nb201_none: str = "exclude"
    """NB201 decoder: ``exclude`` never selects 'none' (the authors' code), ``include`` lets it win the argmax
    (xautodl's DARTS baseline). Passed to decoders that take it (:func:`with_decoder_settings`)."""
    # run
    seed: int = 0
    amp: str = "auto"
    """auto = fp32 (measured fastest for the search step on an H100); bf16 = bf16 autocast on CUDA."""
    channels_last: bool = False
    """channels_last memory format on CUDA (measured no faster for these supernets on an H100; opt in)."""
    compile: str = "off"
    """torch.compile the supernet forward (a seed group: its stacked forward) on CUDA, in this torch.compile mode
    (``default``, ``reduce-overhead`` = CUDA graphs, ``max-autotune``); ``off`` (default) and any CPU run stay eager.
    Changes float rounding only, so a checkpoint resumes with it on or off."""
    device: str = "auto"
    threads: int | None = None
    nb201_table: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the settings that shape the search: a checkpoint only resumes into the same one. Settings
        added after checkpoints were first written count only when set off their default, so those
        checkpoints keep resuming."""
        shaping = {
            k: v
            for k, v in self.to_dict().items()
            if k not in _NON_SHAPING and not (k in _ADDED_SETTINGS and v == _ADDED_SETTINGS[k])
        }
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings that may differ between a run and its resume (where files are, how many epochs in total,
# early-stop policy, threads) without changing what the epochs done so far computed.
_NON_SHAPING = {
    "data_dir",
    "download",
    "patience",
    "min_epochs",
    "tie_se",
    "nb201_none",
    "device",
    "threads",
    "loader_workers",
    "nb201_table",
    "description",
    "criterion",
    "compile",
}

# Shaping settings added after release 0.1, with the default that reproduces the search before them.
_ADDED_SETTINGS = {"augment": "pad_crop", "w_lr_warmup_epochs": 0, "a_grad_clip": 0.0, "data_path": "auto"}

_FIELDS = {f.name: f for f in dataclasses.fields(SearchConfig)}
PRESET_PACKAGE = "launch"


def launch_data_dir(kind: str) -> Path:
    """A folder of YAML settings kept as data in the ``launch`` package: ``presets`` or ``protocols``."""
    return Path(str(resources.files(PRESET_PACKAGE))) / kind


def list_yaml_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_yaml_mapping(name: str, folder: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping named ``name`` in ``folder`` (or in the YAML file ``name`` is a path to); an unknown name
    or a file that is not a mapping raises ``error`` naming it (and, when unknown, the choices)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        raise error(f"unknown {what} {name!r}; choose from {', '.join(list_yaml_names(folder))}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise error(f"{what} {name!r} is not a mapping")
    return data


def preset_dir() -> Path:
    return launch_data_dir("presets")


def list_presets() -> list[str]:
    return list_yaml_names(preset_dir())


def load_preset(name: str) -> dict[str, Any]:
    """The preset's raw mapping; ``name`` may also be a path to a YAML file."""
    return load_yaml_mapping(name, preset_dir(), "preset", ConfigError)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a YAML-typed value (``epochs=10``, ``space_kwargs={C: 8}``, ``a_lr=3e-4``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not YAML ({' '.join(str(exc).split())[:120]})") from None
    return key.strip(), _yaml11_float(value)


def _yaml11_float(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``3e-4`` and ``1e+30`` as strings (it wants ``3.0e-4``); every other tool reads a
    number, and so does this one."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def build_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Defaults <- preset <- overrides, then validated. ``None`` override values are ignored."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "space_kwargs" and isinstance(value, dict):
            values["space_kwargs"] = {**values.get("space_kwargs", {}), **value}
        else:
            values[key] = value
    return config_from_dict(values)


def config_from_dict(values: dict[str, Any]) -> SearchConfig:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(_FIELDS))}")
    values = dict(values)
    if values.get("amp") is False:  # YAML 1.1 reads a bare `off` as false
        values["amp"] = "off"
    if isinstance(values.get("compile"), bool):  # and `on` / `off` as true / false
        values["compile"] = "default" if values["compile"] else "off"
    try:
        values = checked_fields(SearchConfig, values)
    except ValueError as exc:
        raise ConfigError(f"setting {exc}") from None
    config = SearchConfig(**values)
    validate(config)
    return config


def decoder_settings(space: SearchSpace) -> list[str]:
    """The settings ``space``'s decoder takes: its keyword-only parameters named like a SearchConfig field."""
    params = inspect.signature(space.decode).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in _FIELDS]


def with_decoder_settings(space: SearchSpace, config: SearchConfig) -> SearchSpace:
    """``space`` with its decoder bound to the settings it takes (NB201's ``nb201_none``). A space opts into a
    setting through its decoder's signature, so the search loop never names a space; a decoder that takes
    none of them is left as it is."""
    settings = {name: getattr(config, name) for name in decoder_settings(space)}
    if not settings:
        return space
    return dataclasses.replace(space, decode=functools.partial(space.decode, **settings))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: SearchConfig) -> None:
    """Reject bad values with one line naming them. Cheap: touches no data and builds no model."""
    from ostr_ray.core.criteria import list_criteria  # local: criteria imports config-free modules only

    try:
        space = get_space(config.space)
    except SearchSpaceError as err:
        raise ConfigError(str(err)) from None
    _require(config.dataset in DATASETS, f"unknown dataset {config.dataset!r}; choose from {', '.join(DATASETS)}")
    _require(config.order in ORDERS, f"unknown order {config.order!r}; choose from {', '.join(ORDERS)}")
    _require(
        config.amp in AMP_MODES,
        f"unknown amp mode {config.amp!r}; choose from {', '.join(AMP_MODES)}"
        " (fp16 needs loss scaling, which would distort the gradients strength is read from)",
    )
    _require(
        config.compile in COMPILE_MODES,
        f"unknown compile mode {config.compile!r}; choose from {', '.join(COMPILE_MODES)}",
    )
    _require(
        config.criterion in list_criteria(),
        f"unknown criterion {config.criterion!r}; choose from {', '.join(list_criteria())}",
    )
    for name in ("epochs", "batch_size"):
        _require(int(getattr(config, name)) >= 1, f"{name} must be >= 1, got {getattr(config, name)!r}")
    for name in ("patience", "min_epochs", "arch_start_epoch", "crop_padding", "cutout", "w_lr_warmup_epochs"):
        _require(int(getattr(config, name)) >= 0, f"{name} must be >= 0, got {getattr(config, name)!r}")
    for name in ("w_lr", "a_lr"):
        _require(float(getattr(config, name)) > 0, f"{name} must be > 0, got {getattr(config, name)!r}")
    _require(config.tie_se >= 0, f"tie_se must be >= 0, got {config.tie_se!r}")
    _require(
        config.nb201_none in NB201_NONE_MODES,
        f"nb201_none must be one of {', '.join(NB201_NONE_MODES)}, got {config.nb201_none!r}",
    )
    _require(
        config.nb201_none == "exclude" or "nb201_none" in decoder_settings(space),
        f"nb201_none applies to spaces with NAS-Bench-201 cells (nb201), not {config.space!r}",
    )
    _require(config.a_grad_clip >= 0, f"a_grad_clip must be >= 0 (0 = off), got {config.a_grad_clip!r}")
    _require(config.augment in AUGMENTS, f"unknown augment {config.augment!r}; choose from {', '.join(AUGMENTS)}")
    _require(config.seed >= 0, f"seed must be >= 0, got {config.seed!r}")
    _require(
        config.arch_start_epoch < config.epochs,
        f"arch_start_epoch {config.arch_start_epoch} leaves no architecture epochs out of {config.epochs}",
    )
    if config.subset_fraction is not None:
        _require(
            0 < config.subset_fraction <= 1,
            f"subset_fraction must be in (0, 1], got {config.subset_fraction!r}",
        )
    _require(0 < config.train_fraction < 1, f"train_fraction must be in (0, 1), got {config.train_fraction!r}")
    if config.nb201_table:
        _require(
            space.benchmark == "nb201",
            f"nb201_table applies to spaces with NAS-Bench-201 cells (nb201), not {config.space!r}",
        )
    if get_source(config.dataset).needs_data_dir:
        _require(bool(config.data_dir), f"dataset {config.dataset!r} needs --data-dir pointing at a class-folder tree")
    try:
        check_data_path(config.dataset, config.data_path, config.image_size, config.loader_workers)
    except DataError as err:
        raise ConfigError(str(err)) from None
    if config.threads is not None:
        _require(config.threads >= 1, f"threads must be >= 1, got {config.threads!r}")
