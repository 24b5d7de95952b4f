"""The one registry of data sources, what each needs and offers, and loading a source into memory.

Every edge (search config validation, launch pre-flight, retraining) reads :data:`SOURCES`, so a data set
name is defined once. Each :class:`DataSource` says whether it needs a data dir, can download, is a
class-folder tree (so subsets and splits can be drawn on its file list before anything is decoded), always
streams from disk, how many classes it has when that is known up front, and its normalisation statistics
when they are fixed (otherwise they are measured on the decoded images).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from ostr_ray.data.cache import cache_dir, cache_file, cached, image_cache_path
from ostr_ray.data.decode import decode_files, resize
from ostr_ray.data.folders import FileList, class_folder_check, scan_split, split_dir
from ostr_ray.data.images import IMAGENET_MEAN, IMAGENET_STD, DataError, ImageData, channel_stats, seeded_generator
from ostr_ray.data.splits import subset, subset_count

DIGITS_TRAIN_SIZE = 1500
DATA_PATHS = ("auto", "memory", "stream")
"""How a search reads its images: decoded once into memory, streamed from disk per batch, or chosen per tree."""


@dataclass(frozen=True)
class LoadRequest:
    """What a built-in loader is asked for (``num_classes``/``size``/``seed`` shape the synthetic set only)."""

    data_dir: Path | None
    train: bool
    download: bool
    image_size: int | None
    num_classes: int
    size: int | None
    seed: int


@dataclass(frozen=True)
class DataSource:
    """One data set name and what the edges need to know about it."""

    name: str
    description: str
    needs_data_dir: bool = False
    can_download: bool = False
    folder: bool = False
    """A class-folder tree: scanned into a file list that is subset and split before any decoding."""
    streams: bool = False
    """Always read from disk batch by batch (never decoded whole into memory)."""
    num_classes: int | None = None
    """Known up front (None: the tree or the arguments decide)."""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    """Fixed normalisation statistics; None: measured on the decoded images."""
    loader: Callable[[LoadRequest], ImageData] | None = None
    """The in-memory loader of a built-in set (folder sources decode their file list instead)."""
    resolution: int = 224
    """Side of the images when ``image_size`` is unset (a tree of unknown size counts as ImageNet's 224)."""
    sizes: tuple[int, int] | None = None
    """(train, test) image counts when known up front (sizing a retrain without the data on disk)."""
    cached: bool = False
    """Keep the decoded (and resized) tensors in the shared cache: a trial then loads them in milliseconds
    instead of importing the source's library and decoding (scikit-learn and torchvision: ~3 s a process)."""


def _root(request: LoadRequest) -> Path:
    return request.data_dir if request.data_dir is not None else cache_dir() / "data"


def _load_cifar(name: str, request: LoadRequest) -> ImageData:
    """CIFAR through torchvision; downloads run under a lock in the root so concurrent seeds share one."""
    from torchvision import datasets

    root = _root(request)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if request.download:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f".{name}.lock")):
            ds = cls(str(root), train=request.train, download=True)
    else:
        _require_cifar_root(name, root)
        try:
            ds = cls(str(root), train=request.train, download=False)
        except RuntimeError as err:
            msg = f"{name} not found under {root}; pass --download or point --data-dir at it"
            raise DataError(msg) from err
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    if request.image_size is not None:
        images = resize(images, request.image_size)
    source = SOURCES[name]
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageData(images, labels, len(ds.classes), list(ds.classes), source.mean, source.std)


def _require_cifar_root(name: str, root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist; pass --download or point --data-dir at {name}")


def _load_digits(request: LoadRequest) -> ImageData:
    """scikit-learn's 8x8 digits (bundled, no download) as a 3-channel set.

    Split: a permutation seeded with 0; its first 1500 images train, the other 297 test. Statistics come
    from all 1797 images so both splits normalise identically.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    images = resize(gray[:, None].expand(-1, 3, -1, -1).contiguous(), request.image_size or 16)
    mean, std = channel_stats(images)
    order = torch.randperm(len(images), generator=seeded_generator("digits-split", 0))
    idx = order[:DIGITS_TRAIN_SIZE] if request.train else order[DIGITS_TRAIN_SIZE:]
    idx = idx.sort().values
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    return ImageData(images[idx], labels[idx], 10, [str(d) for d in range(10)], mean, std)


def _synthetic(request: LoadRequest) -> ImageData:
    """Seeded random images with a learnable signal: a smooth per-class pattern plus pixel noise.

    Train and test share the class patterns (seeded by ``seed``) and draw independent noise and labels.
    """
    num_classes, seed, image_size = request.num_classes, request.seed, request.image_size or 16
    size = request.size if request.size is not None else (512 if request.train else 128)
    if num_classes < 2:
        raise DataError(f"synthetic data needs num_classes >= 2, got {num_classes}")
    if size < 1:
        raise DataError(f"synthetic data needs size >= 1, got {size}")
    coarse = torch.rand(num_classes, 3, 4, 4, generator=seeded_generator("synthetic-classes", seed, num_classes))
    patterns = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")
    g = seeded_generator("synthetic-samples", seed, num_classes, int(request.train))
    labels = (torch.arange(size) % num_classes)[torch.randperm(size, generator=g)]
    noise = torch.randn(size, 3, image_size, image_size, generator=g) * 0.15
    pixels = (0.25 + 0.5 * patterns[labels] + noise).clamp(0, 1)
    images = pixels.mul(255).round().to(torch.uint8)
    mean, std = channel_stats(images)
    return ImageData(images, labels, num_classes, [f"class{c}" for c in range(num_classes)], mean, std)


SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource(
            "cifar10",
            "CIFAR-10 through torchvision (--download)",
            can_download=True,
            num_classes=10,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            loader=lambda request: _load_cifar("cifar10", request),
            resolution=32,
            cached=True,
            sizes=(50000, 10000),
        ),
        DataSource(
            "cifar100",
            "CIFAR-100 through torchvision (--download)",
            can_download=True,
            num_classes=100,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            loader=lambda request: _load_cifar("cifar100", request),
            resolution=32,
            cached=True,
            sizes=(50000, 10000),
        ),
        DataSource(
            "imagenet",
            "an ImageNet-scale class-folder tree, streamed from disk (JPEGs decoded per batch)",
            needs_data_dir=True,
            folder=True,
            streams=True,
            num_classes=1000,  # ILSVRC-2012; a scanned tree's class folders decide
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            sizes=(1281167, 50000),
        ),
        DataSource(
            "imagefolder",
            "any class-folder tree, decoded once into a shared uint8 cache",
            needs_data_dir=True,
            folder=True,
        ),
        DataSource(
            "digits",
            "scikit-learn's handwritten digits (offline)",
            num_classes=10,
            loader=_load_digits,
            resolution=16,
            cached=True,
            sizes=(DIGITS_TRAIN_SIZE, 1797 - DIGITS_TRAIN_SIZE),
        ),
        DataSource(
            "synthetic",
            "seeded images with a learnable signal (tests)",
            num_classes=10,  # the default; its loader's num_classes argument changes it
            loader=_synthetic,
            resolution=16,
            sizes=(512, 128),
        ),
    )
}
DATASETS = tuple(SOURCES)
"""Every data set name, in one place."""
CIFAR_STATS = {name: (SOURCES[name].mean, SOURCES[name].std) for name in ("cifar10", "cifar100")}


def get_source(name: str) -> DataSource:
    """The registered source called ``name`` (case-insensitive); DataError naming it and the choices if none."""
    source = SOURCES.get(str(name).lower())
    if source is None:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return source


def load_images(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train: bool = True,
    download: bool = False,
    image_size: int | None = None,
    num_classes: int = 10,
    size: int | None = None,
    seed: int = 0,
    subset_size: int | None = None,
) -> ImageData:
    """Load a named data set into memory.

    ``image_size`` resizes to ``image_size x image_size`` (antialiased; e.g. 16 for the CPU proxy). The
    ``num_classes``/``size`` arguments only shape the ``"synthetic"`` set (size defaults to 512 train / 128
    test images). ``data_dir`` defaults to ``<cache dir>/data`` for CIFAR; folder sources need it.
    ``subset_size`` keeps at most that many images, class-balanced and seeded by ``seed``
    (:func:`~ostr_ray.data.splits.subset`); a class-folder tree draws them from its file list and decodes
    only those.
    """
    source = get_source(name)
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if source.streams:
        raise DataError(f"dataset {source.name!r} streams from disk; use 'imagefolder' to decode a tree into memory")
    if source.needs_data_dir and data_dir is None:
        raise DataError(f"dataset {source.name!r} needs a data dir (--data-dir)")
    if source.folder:
        files = folder_files(data_dir, train=train, seed=seed, size=subset_size)
        return load_folder(files, image_size, mean=source.mean, std=source.std)
    request = LoadRequest(
        Path(data_dir) if data_dir is not None else None, train, download, image_size, num_classes, size, seed
    )
    data = _cached_load(source, request) if source.cached else source.loader(request)
    if subset_size is not None and subset_size < len(data):
        data = subset(data, subset_size, seed)
    return data


def folder_files(
    data_dir: str | os.PathLike[str], *, train: bool, seed: int, size: int | None = None, fraction: float | None = None
) -> FileList:
    """A class-folder tree's split as a file list, cut to the seeded class-balanced subset a run reads: at most
    ``size`` files, or ``fraction`` of them (:func:`~ostr_ray.data.splits.subset_count`). The one place a tree's
    subset is drawn, on the list before anything is decoded, so loading, searching and checking read the same
    files."""
    files = scan_split(Path(data_dir), train=train)
    if fraction is not None and fraction < 1:
        size = subset_count(len(files), fraction)
    if size is not None and size < len(files):
        files = subset(files, size, seed)
    return files


def _cached_load(source: DataSource, request: LoadRequest) -> ImageData:
    """A built-in set through the shared decoded-image cache (keyed by set, split, size and root)."""
    root = str(request.data_dir.resolve()) if request.data_dir else "default"
    split = "train" if request.train else "test"
    path = image_cache_path(f"{source.name}-{split}", source.name, request.train, request.image_size, root)

    def load() -> dict:
        data = source.loader(request)
        return {
            "images": data.images,
            "labels": data.labels,
            "classes": data.classes,
            "mean": data.mean,
            "std": data.std,
        }

    found = cached(path, load)
    return ImageData(
        found["images"], found["labels"], len(found["classes"]), list(found["classes"]), found["mean"], found["std"]
    )


def load_folder(
    files: FileList,
    image_size: int | None,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageData:
    """Decode exactly ``files`` (through the shared cache); statistics measured on them unless given."""

    def decode() -> dict:
        images = decode_files(files.paths(), image_size)
        measured = channel_stats(images)
        return {"images": images, "labels": files.labels.clone(), "mean": list(measured[0]), "std": list(measured[1])}

    found = cached(cache_file(files, image_size), decode)
    return ImageData(
        found["images"],
        found["labels"],
        files.num_classes,
        list(files.classes),
        tuple(mean or found["mean"]),
        tuple(std or found["std"]),
    )


def check_data_source(name: str, data_dir: str | os.PathLike[str] | None, *, download: bool = False) -> None:
    """Cheap pre-flight: the data a search will read exists (no decoding). Launches call it before Ray
    starts, so a wrong --data-dir costs one line instead of five failed trials."""
    source = get_source(name)
    if source.needs_data_dir and data_dir is None:
        raise DataError(f"dataset {source.name!r} needs a data dir (--data-dir)")
    if source.folder:
        class_folder_check(split_dir(Path(data_dir), train=True))
    elif source.can_download and not download:
        _require_cifar_root(source.name, Path(data_dir) if data_dir is not None else cache_dir() / "data")


def check_data_path(dataset: str, data_path: str, image_size: int | None, loader_workers: int | None = None) -> None:
    """DataError unless ``data_path`` can read ``dataset`` (settings only: no file is touched)."""
    source = get_source(dataset)
    if data_path not in DATA_PATHS:
        raise DataError(f"unknown data_path {data_path!r}; choose from {', '.join(DATA_PATHS)}")
    folders = ", ".join(name for name, s in SOURCES.items() if s.folder)
    if data_path == "stream" and not source.folder:
        raise DataError(f"data_path 'stream' reads class-folder trees ({folders}), not dataset {source.name!r}")
    if data_path == "memory" and source.streams:
        raise DataError(f"dataset {source.name!r} streams; use data_path auto or stream (or dataset imagefolder)")
    if (data_path == "stream" or source.streams) and image_size is None:
        raise DataError("the streamed path batches images of one size: set image_size (PC-DARTS ImageNet: 224)")
    if loader_workers is not None and loader_workers < 0:
        raise DataError(f"loader_workers must be >= 0, got {loader_workers}")
