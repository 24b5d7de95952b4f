"""The data layer of the search core: in-memory image sets, seeded splits, and a tensor batch stream.

Why it looks like this
----------------------
* Search data sets (CIFAR, CPU proxies, ImageNet subsets) are small enough to live in memory as one uint8
  tensor ``(N, C, H, W)``. Decoding them once and augmenting whole batches with tensor ops removes the
  DataLoader/PIL per-sample overhead that dominates a DARTS supernet step on small images, and keeps the
  data path identical on CPU and GPU.
* Every random choice (splits, subsets, batch order, augmentation) comes from a ``torch.Generator`` seeded
  from a stable hash of named integers, so a seed reproduces a run across processes and machines, and a
  resumed run sees exactly the batches it would have seen, without any saved loader state.
* Several seeds of one experiment often share a machine: downloads and the decoded-image cache are written
  under a :class:`filelock.FileLock` and moved into place atomically, so they are made once and never seen
  half-written.
* Big trees (ImageNet retraining) are streamed instead, by :func:`make_imagefolder_loader`.

This module never imports Ray or MLflow; scikit-learn is imported only when the digits set is asked for.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from filelock import FileLock
from torch import Tensor

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder", "synthetic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""ImageFolder's extensions, so :func:`class_folder_check` counts what the retrain loader will read."""

CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DIGITS_TRAIN_SIZE = 1500
_TV_IO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
_CACHE_VERSION = 1
_PARALLEL_DECODE_MIN = 4096  # below this, worker start-up costs more than it saves
_DECODE_CHUNK = 1024


class DataError(ValueError):
    """Bad data input, with a one-line message naming the offending value."""


# ----------------------------------------------------------------------------------------------- records


@dataclass
class ImageData:
    """A labelled image set held in memory.

    ``mean``/``std`` are per channel in [0, 1] units; they travel with the data so that every consumer
    normalises the same way (subsets and splits keep their parent's statistics).
    """

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor  # int64 (N,)
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must be int64 ({self.images.shape[0]},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise DataError(f"mean/std need {self.images.shape[1]} channels, got {len(self.mean)}/{len(self.std)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), what a network's stem needs to know."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def take(self, indices: Tensor) -> ImageData:
        """The images at ``indices``, same classes and normalisation statistics."""
        return replace(self, images=self.images[indices], labels=self.labels[indices])


@dataclass(frozen=True)
class AugmentSpec:
    """Batched training augmentation; the defaults only normalise (what evaluation uses)."""

    random_crop_padding: int = 0  # zero-pad then crop back at a random offset; DARTS uses 4 on 32x32
    horizontal_flip: bool = False
    cutout: int = 0  # side length of the zeroed square; DARTS retraining uses 16 on 32x32
    normalize: bool = True  # False returns floats in [0, 1]

    def __post_init__(self) -> None:
        if self.random_crop_padding < 0:
            raise DataError(f"random_crop_padding must be >= 0, got {self.random_crop_padding}")
        if self.cutout < 0:
            raise DataError(f"cutout must be >= 0, got {self.cutout}")

    @classmethod
    def darts(cls, cutout: int = 0) -> AugmentSpec:
        """The DARTS CIFAR recipe: pad-4 random crop and horizontal flip (+ cutout when retraining)."""
        return cls(random_crop_padding=4, horizontal_flip=True, cutout=cutout)


# ------------------------------------------------------------------------------------------ seeding


def _seed_from(*parts: int | str) -> int:
    """A 63-bit seed from named parts; stable across processes (unlike ``hash``) and machines."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(_seed_from(*parts))


# ------------------------------------------------------------------------------------------ loading


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
) -> ImageData:
    """Load a named data set into memory.

    ``image_size`` resizes to ``image_size x image_size`` (antialiased; e.g. 16 for the CPU proxy). The
    ``num_classes``/``size``/``seed`` arguments only shape the ``"synthetic"`` set (size defaults to 512
    train / 128 test images). ``data_dir`` defaults to ``<cache dir>/data`` for CIFAR; ``"imagefolder"``
    needs it.
    """
    key = name.lower()
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if key in CIFAR_STATS:
        root = Path(data_dir) if data_dir is not None else cache_dir() / "data"
        return _load_cifar(key, root, train=train, download=download, image_size=image_size)
    if key == "imagefolder":
        if data_dir is None:
            raise DataError("dataset 'imagefolder' needs a data dir (--data-dir)")
        return _load_imagefolder(Path(data_dir), train=train, image_size=image_size)
    if key == "digits":
        return _load_digits(train=train, image_size=image_size or 16)
    return _synthetic(num_classes, size, image_size or 16, seed, train)


def cache_dir() -> Path:
    """Decoded-image cache (and default CIFAR download) root: ``$OSTR_RAY_CACHE`` or ~/.cache/ostr_ray."""
    return Path(os.environ.get("OSTR_RAY_CACHE") or Path.home() / ".cache" / "ostr_ray")


def _load_cifar(name: str, root: Path, *, train: bool, download: bool, image_size: int | None) -> ImageData:
    """CIFAR through torchvision; downloads run under a lock in ``root`` so concurrent seeds share one."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if download:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f".{name}.lock")):
            ds = cls(str(root), train=train, download=True)
    else:
        if not root.is_dir():
            raise DataError(f"data dir {root} does not exist; pass --download or point --data-dir at {name}")
        try:
            ds = cls(str(root), train=train, download=False)
        except RuntimeError as err:
            msg = f"{name} not found under {root}; pass --download or point --data-dir at it"
            raise DataError(msg) from err
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    if image_size is not None:
        images = _resize(images, image_size)
    mean, std = CIFAR_STATS[name]
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageData(images, labels, len(ds.classes), list(ds.classes), mean, std)


def _load_digits(*, train: bool, image_size: int) -> ImageData:
    """scikit-learn's 8x8 digits (bundled, no download) as a 3-channel set.

    Split: a permutation seeded with 0; its first 1500 images train, the other 297 test. Statistics come
    from all 1797 images so both splits normalise identically.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    images = _resize(gray[:, None].expand(-1, 3, -1, -1).contiguous(), image_size)
    mean, std = _channel_stats(images)
    order = torch.randperm(len(images), generator=_generator("digits-split", 0))
    idx = order[:DIGITS_TRAIN_SIZE] if train else order[DIGITS_TRAIN_SIZE:]
    idx = idx.sort().values
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    return ImageData(images[idx], labels[idx], 10, [str(d) for d in range(10)], mean, std)


def _synthetic(num_classes: int, size: int | None, image_size: int, seed: int, train: bool) -> ImageData:
    """Seeded random images with a learnable signal: a smooth per-class pattern plus pixel noise.

    Train and test share the class patterns (seeded by ``seed``) and draw independent noise and labels.
    """
    size = size if size is not None else (512 if train else 128)
    if num_classes < 2:
        raise DataError(f"synthetic data needs num_classes >= 2, got {num_classes}")
    if size < 1:
        raise DataError(f"synthetic data needs size >= 1, got {size}")
    coarse = torch.rand(num_classes, 3, 4, 4, generator=_generator("synthetic-classes", seed, num_classes))
    patterns = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")
    g = _generator("synthetic-samples", seed, num_classes, int(train))
    labels = (torch.arange(size) % num_classes)[torch.randperm(size, generator=g)]
    noise = torch.randn(size, 3, image_size, image_size, generator=g) * 0.15
    pixels = (0.25 + 0.5 * patterns[labels] + noise).clamp(0, 1)
    images = pixels.mul(255).round().to(torch.uint8)
    mean, std = _channel_stats(images)
    return ImageData(images, labels, num_classes, [f"class{c}" for c in range(num_classes)], mean, std)


def _resize(images: Tensor, image_size: int) -> Tensor:
    """Antialiased bilinear resize of a uint8 batch, in chunks to bound the float scratch memory."""
    from torchvision.transforms.v2 import functional as TF

    if tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    chunks = [TF.resize(c, [image_size, image_size], antialias=True) for c in images.split(8192)]
    return torch.cat(chunks) if chunks else images.new_empty((0, images.shape[1], image_size, image_size))


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, in float64 chunks (50k images stay cheap)."""
    count = images.shape[0] * images.shape[2] * images.shape[3]
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(8192):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel must not divide by zero
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# ------------------------------------------------------------------------------------------ image folders


def class_folder_check(path: str | os.PathLike[str]) -> int:
    """Number of images in a class-folder tree (``<path>/<class>/**/<image>``); DataError if it is not one."""
    return len(_scan_class_folders(Path(path))[1])


def _scan_class_folders(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """Classes (sorted folder names, as torchvision's ImageFolder) and every image path with its label."""
    _require_dir(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for label, cls in enumerate(classes):
        found = _images_under(root / cls)
        if not found:
            empty.append(cls)
        paths += found
        labels += [label] * len(found)
    if empty:
        raise DataError(f"class folder(s) without images under {root}: {', '.join(empty[:5])}")
    return classes, paths, labels


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _require_dir(path: Path) -> None:
    if not path.is_dir():
        raise DataError(f"data dir {path} " + ("is not a directory" if path.exists() else "does not exist"))


def _split_dir(data_dir: Path, train: bool) -> Path:
    """train: ``data_dir/train`` if present, else ``data_dir``; eval: ``data_dir/test`` or ``/val``."""
    _require_dir(data_dir)
    for sub in ("train",) if train else ("test", "val"):
        if (data_dir / sub).is_dir():
            return data_dir / sub
    if train:
        return data_dir
    raise DataError(f"data dir {data_dir} has no test/ or val/ folder to evaluate on")


def _load_imagefolder(data_dir: Path, *, train: bool, image_size: int | None) -> ImageData:
    """Decode a class-folder tree once per (tree, size, contents) and reuse the decoded tensors after."""
    root = _split_dir(data_dir, train)
    classes, paths, labels = _scan_class_folders(root)
    cache_file = _cache_file(root, paths, image_size)
    cached = _read_cache(cache_file)
    if cached is None:
        cached = _decode_cached(cache_file, lambda: _decode_tree(paths, labels, classes, image_size))
    return ImageData(
        cached["images"],
        cached["labels"],
        len(classes),
        list(cached["classes"]),
        tuple(cached["mean"]),
        tuple(cached["std"]),
    )


def _cache_file(root: Path, paths: Sequence[Path], image_size: int | None) -> Path:
    """Cache path keyed by resolved path, size, file count and newest mtime, so edits re-decode."""
    newest = max(p.stat().st_mtime_ns for p in paths)
    key = f"{root.resolve()}|{image_size}|{len(paths)}|{newest}|v{_CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir() / "images" / f"{root.name}-{image_size or 'orig'}-{digest}.pt"


def _decode_cached(cache_file: Path, decode: Callable[[], dict]) -> dict:
    """Decode under the cache lock, so concurrent trials on one machine decode once and then share the file.

    An unwritable cache only costs speed: decoding still happens, with a warning.
    """
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cache_file) + ".lock")
        lock.acquire()
    except OSError as err:
        warnings.warn(f"image cache {cache_file} unusable ({err}); decoding without it", stacklevel=3)
        return decode()
    try:
        cached = _read_cache(cache_file)  # another process may have decoded it while we waited
        if cached is None:
            cached = decode()
            try:
                _atomic_save(cached, cache_file)
            except OSError as err:
                warnings.warn(f"could not write image cache {cache_file}: {err}", stacklevel=3)
        return cached
    finally:
        lock.release()


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # a foreign or truncated file: decode again rather than fail the run
        warnings.warn(f"ignoring unreadable image cache {path}: {err}", stacklevel=3)
        return None


def _atomic_save(obj: dict, path: Path) -> None:
    """Write next to ``path`` then rename, so readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _decode_tree(paths: list[Path], labels: list[int], classes: list[str], image_size: int | None) -> dict:
    images = _decode_all(paths, image_size)
    mean, std = _channel_stats(images)
    return {
        "images": images,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "classes": list(classes),
        "mean": list(mean),
        "std": list(std),
    }


class _DecodeChunks(torch.utils.data.Dataset):
    """Chunks of paths, so DataLoader workers (robust fork handling, per-worker thread limits) decode them."""

    def __init__(self, paths: list[Path], image_size: int | None) -> None:
        self.chunks = [paths[i : i + _DECODE_CHUNK] for i in range(0, len(paths), _DECODE_CHUNK)]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Tensor | str:
        try:
            return _decode_chunk(self.chunks[i], self.image_size)
        except DataError as err:  # returned, so the parent re-raises it as a one-line DataError
            return str(err)


def _decode_all(paths: list[Path], image_size: int | None) -> Tensor:
    """Decode in a few worker processes: torchvision's decoders hold the GIL, so threads do not help."""
    workers = 0 if len(paths) < _PARALLEL_DECODE_MIN else min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(_DecodeChunks(paths, image_size), batch_size=None, num_workers=workers)
    chunks = list(loader)
    for chunk in chunks:
        if isinstance(chunk, str):
            raise DataError(chunk)
    shapes = {tuple(c.shape[1:]) for c in chunks}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}; pass image_size to resize them")
    return torch.cat(chunks)


def _decode_chunk(paths: Sequence[Path], image_size: int | None) -> Tensor:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.filterwarnings("ignore", ".*decoding and encoding capabilities", DeprecationWarning)
        images = [_decode_file(p) for p in paths]
    if image_size is not None:
        if len({tuple(im.shape) for im in images}) == 1:
            return _resize(torch.stack(images), image_size)
        images = [_resize(im[None], image_size)[0] for im in images]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}; pass image_size to resize them")
    return torch.stack(images)


def _decode_file(path: Path) -> Tensor:
    """One image as uint8 (3, H, W); grayscale and alpha images become RGB."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        if path.suffix.lower() in _TV_IO_EXTENSIONS:
            return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        from PIL import Image  # bmp/ppm/tif: formats torchvision.io cannot decode

        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (RuntimeError, OSError, ValueError) as err:
        raise DataError(f"cannot decode image {path}: {' '.join(str(err).split())}") from err


# ------------------------------------------------------------------------------------------ subsets


def subset(data: ImageData, n: int, seed: int, *, per_class: bool = True) -> ImageData:
    """``n`` seeded images, as class-balanced as the data allows when ``per_class`` (kept in data order).

    Balance is by round-robin over classes in a seeded order: every class gives its k-th random image
    before any gives its (k+1)-th, so small classes are used up and the rest fill in from the others.
    """
    if not 1 <= n <= len(data):
        raise DataError(
            f"subset size {n} is larger than the {len(data)} images available"
            if n > len(data)
            else f"subset size must be >= 1, got {n}"
        )
    g = _generator("subset", seed, n)
    perm = torch.randperm(len(data), generator=g)
    if not per_class:
        return data.take(perm[:n].sort().values)
    labels = data.labels[perm]
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels, minlength=data.num_classes)
    rank_in_class = torch.arange(len(data)) - (torch.cumsum(counts, 0) - counts)[sorted_labels]
    class_rank = torch.randperm(len(counts), generator=g)
    key = rank_in_class * len(counts) + class_rank[sorted_labels]
    chosen = perm[order[torch.argsort(key)[:n]]]
    return data.take(chosen.sort().values)


def search_split(
    data: ImageData,
    seed: int,
    *,
    fraction: float = 0.5,
    train_size: int | None = None,
    val_size: int | None = None,
) -> tuple[ImageData, ImageData]:
    """Split a training set into (weight-training, architecture-validation) halves by a seeded permutation.

    This is the DARTS/NAS-Bench-201 search convention; ``train_size``/``val_size`` cap each half.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {fraction}")
    n_train = int(round(len(data) * fraction))
    if not 0 < n_train < len(data):
        raise DataError(f"cannot split {len(data)} images with fraction {fraction}: a half would be empty")
    perm = torch.randperm(len(data), generator=_generator("search-split", seed))
    halves = []
    parts = ((perm[:n_train], train_size, "train_size"), (perm[n_train:], val_size, "val_size"))
    for idx, cap, what in parts:
        if cap is not None and not 1 <= cap <= len(idx):
            raise DataError(
                f"{what} {cap} is larger than the {len(idx)} images available in that half"
                if cap > len(idx)
                else f"{what} must be >= 1, got {cap}"
            )
        halves.append(data.take(idx[:cap].sort().values))
    return halves[0], halves[1]


# ------------------------------------------------------------------------------------------ batches


class _EpochPlan(NamedTuple):
    """All random draws of one epoch, position-aligned, so any batch can be rebuilt on its own."""

    order: Tensor
    offsets: Tensor | None  # (N, 2) crop offsets in [0, 2 * padding]
    flips: Tensor | None  # (N,) bool
    centers: Tensor | None  # (N, 2) cutout centres


class BatchStream:
    """Deterministic, augmented minibatches from an in-memory ImageData on one device.

    The order and augmentation of epoch ``e`` are a pure function of ``(seed, stream_id, e)``: resuming
    at an epoch (or a batch, with ``start_batch``) replays identical batches with no saved state. Random
    draws happen on CPU generators, so CPU and GPU runs see the same data. The uint8 images move to the
    device once; each batch is gathered, cropped and flipped in one indexing op, then converted to float,
    normalised and cut out, all batched. ``stream_id`` separates streams that share a seed (e.g. the
    weight and architecture halves of a search).
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        seed: int,
        augment: AugmentSpec = AugmentSpec(),
        device: str | torch.device = "cpu",
        drop_last: bool = True,
        channels_last: bool = False,
        stream_id: int = 0,
    ) -> None:
        if batch_size < 1 or (drop_last and batch_size > len(data)):
            raise DataError(
                f"batch size {batch_size} does not fit {len(data)} images"
                + (" (drop_last would leave no batch)" if batch_size >= 1 else "")
            )
        self.batch_size = batch_size
        self.seed, self.stream_id, self.augment = seed, stream_id, augment
        self.drop_last, self.channels_last = drop_last, channels_last
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        std = torch.tensor(data.std, dtype=torch.float32)
        mean = torch.tensor(data.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)
        self._shift = (mean / std).view(1, -1, 1, 1).to(self.device)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, *, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``(float images (B, C, H, W), int64 labels (B,))`` of an epoch, from ``start_batch``."""
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise DataError(f"epoch {epoch} / start_batch {start_batch} out of range (0.., 0..{len(self)})")
        return self._batches(self._plan(epoch), start_batch)

    def _batches(self, plan: _EpochPlan, start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for b in range(start_batch, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self._batch(_EpochPlan(*(None if t is None else t[sl] for t in plan)))

    def _plan(self, epoch: int) -> _EpochPlan:
        """Draw the epoch's order and augmentation on CPU (device-independent), then move them once."""
        n, spec = len(self.images), self.augment
        order = torch.randperm(n, generator=_generator("order", self.seed, self.stream_id, epoch))
        g = _generator("augment", self.seed, self.stream_id, epoch)
        h, w = self.images.shape[-2:]
        pad = spec.random_crop_padding
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g) if pad else None
        flips = torch.rand(n, generator=g) < 0.5 if spec.horizontal_flip else None
        centers = None
        if spec.cutout:
            centers = torch.stack(
                [torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)], dim=1
            )
        return _EpochPlan(
            *(None if t is None else t.to(self.device, non_blocking=True) for t in (order, offsets, flips, centers))
        )

    def _batch(self, plan: _EpochPlan) -> tuple[Tensor, Tensor]:
        idx = plan.order
        if plan.offsets is None and plan.flips is None:
            x = self.images[idx]
        else:
            x = self._crop_flip(idx, plan.offsets, plan.flips)
        x = torch.addcmul(-self._shift, x.float(), self._scale) if self.augment.normalize else x.float().div_(255.0)
        if plan.centers is not None:
            x = x.masked_fill_(self._cutout_mask(plan.centers, x.shape[-2], x.shape[-1]), 0.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]

    def _crop_flip(self, idx: Tensor, offsets: Tensor | None, flips: Tensor | None) -> Tensor:
        """Zero-padded random crop + horizontal flip as two batched gathers with per-sample index arithmetic.

        Source row/column of output pixel (i, j) is ``i + oy - pad`` / ``j' + ox - pad`` with ``j'`` mirrored
        when flipped; indices outside the image are clamped for the gather and zeroed after (the padding).
        """
        c, h, w = self.images.shape[1:]
        pad = self.augment.random_crop_padding if offsets is not None else 0
        rows = torch.arange(h, device=self.device).expand(len(idx), h)
        cols = torch.arange(w, device=self.device).expand(len(idx), w)
        if flips is not None:
            cols = torch.where(flips[:, None], w - 1 - cols, cols)
        if offsets is not None:
            rows = rows + (offsets[:, :1] - pad)
            cols = cols + (offsets[:, 1:] - pad)
        shape = (len(idx), c, h, w)
        x = self.images[idx].gather(2, rows.clamp(0, h - 1)[:, None, :, None].expand(shape))
        x = x.gather(3, cols.clamp(0, w - 1)[:, None, None, :].expand(shape))
        if pad:
            inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
            x = x.masked_fill_(~inside[:, None], 0)
        return x

    def _cutout_mask(self, centers: Tensor, h: int, w: int) -> Tensor:
        """(B, 1, H, W) mask of the square ``[c - L//2, c + L//2)`` per sample, border-clipped as DARTS."""
        half = self.augment.cutout // 2
        ys = torch.arange(h, device=self.device)
        xs = torch.arange(w, device=self.device)
        in_rows = (ys >= centers[:, :1] - half) & (ys < centers[:, :1] + half)
        in_cols = (xs >= centers[:, 1:] - half) & (xs < centers[:, 1:] + half)
        return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


# ------------------------------------------------------------------------------------------ streaming


def make_imagefolder_loader(
    root: str | os.PathLike[str],
    *,
    train: bool,
    image_size: int = 224,
    batch_size: int,
    num_workers: int,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A streaming loader for trees too big to decode into memory (ImageNet retraining).

    Standard ImageNet transforms: RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.2) for training,
    Resize(256/224 * size) + CenterCrop(size) for evaluation. With ``distributed`` it shards through a
    DistributedSampler (rank/world from the arguments or torch.distributed); the caller must call
    ``loader.sampler.set_epoch(epoch)`` each epoch so shards reshuffle.
    """
    from torchvision import datasets
    from torchvision.transforms import v2

    folder = _split_dir(Path(root), train)
    class_folder_check(folder)
    if train:
        head = [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.4, 0.4, 0.4, 0.2),
        ]
    else:
        head = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    dataset = datasets.ImageFolder(str(folder), transform=v2.Compose(head + tail))
    sampler = None
    if distributed:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed, drop_last=train
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=train,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def check_data_source(name: str, data_dir: str | os.PathLike[str] | None, *, download: bool = False) -> None:
    """Cheap pre-flight: the data a search will read exists (no decoding). Launches call it before Ray
    starts, so a wrong --data-dir costs one line instead of five failed trials."""
    key = name.lower()
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if key == "imagefolder":
        if data_dir is None:
            raise DataError("dataset 'imagefolder' needs a data dir (--data-dir)")
        class_folder_check(_split_dir(Path(data_dir), train=True))
    elif key in CIFAR_STATS and not download:
        root = Path(data_dir) if data_dir is not None else cache_dir() / "data"
        if not root.is_dir():
            raise DataError(f"data dir {root} does not exist; pass --download or point --data-dir at {name}")
