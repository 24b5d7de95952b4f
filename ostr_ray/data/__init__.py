"""The data layer: image sources, decoding, the decoded-image cache, seeded splits and batch streams.

Why it looks like this
----------------------
* Search data sets (CIFAR, CPU proxies, small ImageNet crops) are small enough to live in memory as one
  uint8 tensor ``(N, C, H, W)``: decoded once, augmented whole batches at a time with tensor ops on the
  device (:class:`BatchStream`). That removes the DataLoader/PIL per-sample overhead that dominates a DARTS
  supernet step on small images.
* ImageNet-scale trees are streamed instead (:class:`StreamedBatchStream`): subsets and the search split are
  drawn on the file list before anything is decoded, and JPEGs are decoded per batch in DataLoader workers.
* Every random choice (splits, subsets, batch order, augmentation) comes from a generator seeded from a
  stable hash of named integers, so a seed reproduces a run across processes and machines, and a resumed
  run sees exactly the batches it would have seen, without any saved loader state.
* Several seeds of one experiment often share a machine: downloads and the decoded-image cache are written
  under a file lock and moved into place atomically, so they are made once and never seen half-written.

Modules, one concern each: ``images`` (records, seeding), ``sources`` (the one registry of data sets and
in-memory loading), ``folders`` (class-folder trees, file lists, pre-flight), ``decode``, ``cache``,
``splits``, ``stream`` (in-memory batches), ``streaming`` (streamed batches and the retraining loader).
This package never imports Ray or MLflow; scikit-learn is imported only when the digits set is asked for.
"""

from __future__ import annotations

from ostr_ray.data.cache import cache_dir
from ostr_ray.data.decode import decode_file, image_size_of, resize
from ostr_ray.data.folders import (
    IMAGE_EXTENSIONS,
    FileList,
    class_folder_check,
    class_names,
    scan_class_folders,
    scan_split,
    split_dir,
)
from ostr_ray.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentSpec,
    DataError,
    ImageData,
    channel_stats,
    seed_from,
    seeded_generator,
)
from ostr_ray.data.sources import (
    CIFAR_STATS,
    DATA_PATHS,
    DATASETS,
    DIGITS_TRAIN_SIZE,
    SOURCES,
    DataSource,
    check_data_path,
    check_data_source,
    folder_files,
    get_source,
    load_folder,
    load_images,
)
from ostr_ray.data.splits import search_split, split_indices, subset, subset_count, subset_indices
from ostr_ray.data.stream import Batches, BatchStream, ImageTransform, apply_seeded
from ostr_ray.data.streaming import (
    FileSamples,
    StreamedBatchStream,
    StreamPlan,
    make_imagefolder_loader,
    random_resized_crop,
    resize_pad_crop,
)
from ostr_ray.data.verify import verify_files

__all__ = [
    "CIFAR_STATS",
    "DATASETS",
    "DATA_PATHS",
    "DIGITS_TRAIN_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "AugmentSpec",
    "BatchStream",
    "Batches",
    "DataError",
    "DataSource",
    "FileList",
    "FileSamples",
    "ImageData",
    "ImageTransform",
    "StreamPlan",
    "StreamedBatchStream",
    "apply_seeded",
    "cache_dir",
    "verify_files",
    "channel_stats",
    "check_data_path",
    "check_data_source",
    "class_folder_check",
    "class_names",
    "decode_file",
    "folder_files",
    "get_source",
    "image_size_of",
    "load_folder",
    "load_images",
    "make_imagefolder_loader",
    "random_resized_crop",
    "resize",
    "resize_pad_crop",
    "scan_class_folders",
    "scan_split",
    "search_split",
    "seed_from",
    "seeded_generator",
    "split_dir",
    "split_indices",
    "subset",
    "subset_count",
    "subset_indices",
]
