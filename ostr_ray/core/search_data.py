"""The two data streams of one seed's search: the weight-training half and the architecture half.

Two paths (``SearchConfig.data_path``):

* memory: the searched images are decoded once into RAM (shared between seeds through the decoded-image
  cache) and whole batches are augmented with tensor ops on the device. Fastest where it fits: NB201, CIFAR,
  CPU proxies.
* stream: the batches are decoded from the files by DataLoader workers, so RAM holds the batches in flight,
  not the data set. This is how PC-DARTS searches ImageNet directly: 12.5% of ImageNet at 224x224 would be
  ~19 GB of uint8 per trial in memory.

For class-folder trees the subset and the train/val split are drawn on the file list (paths and labels)
before anything is decoded, so either path reads only the chosen files. Both streams give the same
interface (``len()``, ``epoch(p, start_batch=b)``), cheap to restart at any pass and batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ostr_ray.core.config import SearchConfig
from ostr_ray.core.placement import use_channels_last
from ostr_ray.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentSpec,
    Batches,
    BatchStream,
    DataError,
    DataSource,
    FileList,
    ImageData,
    ImageTransform,
    StreamedBatchStream,
    folder_files,
    get_source,
    image_size_of,
    load_folder,
    load_images,
    random_resized_crop,
    resize_pad_crop,
    split_indices,
    subset,
    subset_count,
    verify_files,
)

STREAM_MIN_IMAGE_SIZE = 128
"""auto streams trees searched at this size or more: decoding a few JPEGs per batch costs little next to a
supernet step on such images, and their decoded sets grow quickly (224px: 150 KB per image)."""
MEMORY_BUDGET_BYTES = 4 * 2**30
"""auto streams a tree whose decoded (subset of) images would need more RAM than this per trial."""
MAX_DEFAULT_LOADER_WORKERS = 8


@dataclass
class SearchData:
    train: Batches
    val: Batches
    num_classes: int
    in_channels: int
    data_path: str = "memory"
    """The path taken (``auto`` resolved): ``memory`` or ``stream``."""


def build_data(config: SearchConfig, device: torch.device) -> SearchData:
    """Load (or list), optionally subset, halve by a seeded split, and wrap both halves in deterministic streams."""
    source = get_source(config.dataset)
    if not source.folder:
        images = load_images(
            config.dataset,
            data_dir=config.data_dir,
            train=True,
            download=config.download,
            image_size=config.image_size,
        )
        if _subsetting(config):
            images = subset(images, subset_count(len(images), config.subset_fraction), seed=config.seed)
        return _memory_data(config, device, images)
    files = searched_files(config)
    if choose_data_path(config, source, files) == "stream":
        return _streamed_data(config, device, source, files)
    return _memory_data(config, device, load_folder(files, config.image_size, mean=source.mean, std=source.std))


def searched_files(config: SearchConfig) -> FileList | None:
    """The files of a class-folder tree this seed's search reads (its subset), None for other sources."""
    if not get_source(config.dataset).folder:
        return None
    return folder_files(config.data_dir, train=True, seed=config.seed, fraction=config.subset_fraction)


def check_searched_images(config: SearchConfig) -> None:
    """Decode every file this seed will read, before any training (DataError naming a bad file): the memory
    path decodes them into the shared cache its search then reads; the streamed path checks them once per
    state of the tree (:func:`ostr_ray.data.verify_files`)."""
    source = get_source(config.dataset)
    if source.cached:  # a built-in set: load it once here, into the cache every trial then reads
        load_images(config.dataset, data_dir=config.data_dir, download=config.download, image_size=config.image_size)
        return
    files = searched_files(config)
    if files is None:
        return
    if choose_data_path(config, source, files) == "stream":
        verify_files(files)
    else:
        load_folder(files, config.image_size, mean=source.mean, std=source.std)


def _subsetting(config: SearchConfig) -> bool:
    return config.subset_fraction is not None and config.subset_fraction < 1


def choose_data_path(config: SearchConfig, source: DataSource, files: FileList) -> str:
    """``memory`` or ``stream`` for a class-folder tree (see ``SearchConfig.data_path``)."""
    if config.data_path != "auto":
        return config.data_path
    if source.streams or (config.image_size or 0) >= STREAM_MIN_IMAGE_SIZE:
        return "stream"
    return "stream" if decoded_bytes(files, config.image_size) > MEMORY_BUDGET_BYTES else "memory"


def decoded_bytes(files: FileList, image_size: int | None) -> int:
    """RAM the uint8 decode of ``files`` would take; at native size, estimated from the first file's header."""
    h, w = (image_size, image_size) if image_size is not None else image_size_of(files.path(0))
    return len(files) * 3 * h * w


def default_loader_workers(config: SearchConfig) -> int:
    """DataLoader workers per stream: half the torch threads this search was given (the two streams decode
    side by side, in step), at least 1, at most 8; ``loader_workers`` overrides it."""
    if config.loader_workers is not None:
        return config.loader_workers
    return max(1, min(MAX_DEFAULT_LOADER_WORKERS, torch.get_num_threads() // 2))


def _memory_data(config: SearchConfig, device: torch.device, images: ImageData) -> SearchData:
    """Both halves index one uint8 tensor on the device (no copy per half: the peak stays one decoded set)."""
    train_idx, val_idx = _split_indices(config, len(images))
    used = torch.cat([train_idx, val_idx]).sort().values
    if len(used) < len(images):  # train_size/val_size caps: keep only the images the halves read
        position = torch.empty(len(images), dtype=torch.int64)
        position[used] = torch.arange(len(used))
        images, train_idx, val_idx = images.take(used), position[train_idx], position[val_idx]
    shared = replace(images, images=images.images.to(device), labels=images.labels.to(device))
    channels_last = use_channels_last(config, device)
    augment, transform = _memory_augment(config, images)
    streams = [
        BatchStream(
            shared,
            config.batch_size,
            seed=config.seed,
            augment=augment,
            device=device,
            channels_last=channels_last,
            stream_id=stream_id,
            image_transform=transform,
            indices=indices,
        )
        for stream_id, indices in enumerate((train_idx, val_idx))
    ]
    return SearchData(streams[0], streams[1], images.num_classes, images.image_shape[0], "memory")


def _memory_augment(config: SearchConfig, images: ImageData) -> tuple[AugmentSpec, ImageTransform | None]:
    """pad_crop: the batched DARTS crop and flip. random_resized_crop: torchvision's crop (and flip) per image,
    seeded per position by the stream, on the images as decoded (already at image_size)."""
    if config.augment == "random_resized_crop":
        size = images.image_shape[1]
        return AugmentSpec(cutout=config.cutout), random_resized_crop(size, flip=config.horizontal_flip)
    spec = AugmentSpec(
        random_crop_padding=config.crop_padding, horizontal_flip=config.horizontal_flip, cutout=config.cutout
    )
    return spec, None


def _streamed_data(config: SearchConfig, device: torch.device, source: DataSource, files: FileList) -> SearchData:
    size = config.image_size
    if size is None:
        raise DataError(f"{files.root} is streamed ({len(files)} images): set image_size (PC-DARTS ImageNet: 224)")
    if config.augment == "random_resized_crop":
        transform = random_resized_crop(size, flip=config.horizontal_flip)
    else:
        transform = resize_pad_crop(size, padding=config.crop_padding, flip=config.horizontal_flip)
    train_idx, val_idx = _split_indices(config, len(files))
    streams = [
        StreamedBatchStream(
            half,
            config.batch_size,
            seed=config.seed,
            image_size=size,
            transform=transform,
            mean=source.mean or IMAGENET_MEAN,  # a tree too big to decode is normalised as ImageNet
            std=source.std or IMAGENET_STD,
            cutout=config.cutout,
            device=device,
            channels_last=use_channels_last(config, device),
            stream_id=stream_id,
            num_workers=default_loader_workers(config),
        )
        for stream_id, half in enumerate((files.take(train_idx), files.take(val_idx)))
    ]
    return SearchData(streams[0], streams[1], files.num_classes, 3, "stream")


def _split_indices(config: SearchConfig, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    return split_indices(
        total, config.seed, fraction=config.train_fraction, train_size=config.train_size, val_size=config.val_size
    )
