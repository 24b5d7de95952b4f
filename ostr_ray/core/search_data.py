"""The two data streams of one seed's search: the weight-training half and the architecture half."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ostr_ray.core.config import SearchConfig
from ostr_ray.core.placement import use_channels_last
from ostr_ray.data import AugmentSpec, BatchStream, load_images, search_split, subset


@dataclass
class SearchData:
    train: BatchStream
    val: BatchStream
    num_classes: int
    in_channels: int


def build_data(config: SearchConfig, device: torch.device) -> SearchData:
    """Load, optionally subset, halve by a seeded split, and wrap both halves in deterministic streams."""
    images = load_images(
        config.dataset,
        data_dir=config.data_dir,
        train=True,
        download=config.download,
        image_size=config.image_size,
    )
    if config.subset_fraction is not None and config.subset_fraction < 1:
        images = subset(images, max(2, round(config.subset_fraction * len(images.labels))), seed=config.seed)
    train, val = search_split(
        images,
        seed=config.seed,
        fraction=config.train_fraction,
        train_size=config.train_size,
        val_size=config.val_size,
    )
    augment = AugmentSpec(
        random_crop_padding=config.crop_padding, horizontal_flip=config.horizontal_flip, cutout=config.cutout
    )
    channels_last = use_channels_last(config, device)
    streams = [
        BatchStream(
            half,
            config.batch_size,
            seed=config.seed,
            augment=augment,
            device=device,
            channels_last=channels_last,
            stream_id=stream_id,
        )
        for stream_id, half in enumerate((train, val))
    ]
    return SearchData(streams[0], streams[1], images.num_classes, int(images.images.shape[1]))
