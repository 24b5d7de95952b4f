"""The records every data path shares: an in-memory image set, the batched augmentation spec, the one error
type, and the seeding helpers that make every random choice a pure function of named integers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """Bad data input, with a one-line message naming the offending value."""


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


def seed_from(*parts: int | str) -> int:
    """A 63-bit seed from named parts; stable across processes (unlike ``hash``) and machines."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_generator(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded by :func:`seed_from`: draws on it are the same on every machine and device."""
    return torch.Generator().manual_seed(seed_from(*parts))


_STATS_CHUNK_ELEMENTS = 1 << 22  # 32 MiB of float64 scratch at a time, whatever the image size


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, in float64 chunks of bounded size.

    The sums are of integers (pixels <= 255, squares <= 65025) far below 2**53, so they are exact in float64
    and do not depend on the chunking.
    """
    count = images.shape[0] * images.shape[2] * images.shape[3]
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    per_image = max(1, images[0].numel()) if len(images) else 1
    for chunk in images.split(max(1, _STATS_CHUNK_ELEMENTS // per_image)):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel must not divide by zero
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
