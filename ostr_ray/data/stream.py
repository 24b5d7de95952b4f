"""Deterministic, augmented minibatches from an in-memory image set: :class:`BatchStream`.

Search data sets (CIFAR, CPU proxies, small ImageNet crops) live in memory as one uint8 tensor, so whole
batches are gathered, cropped, flipped, normalised and cut out with tensor ops on the device: no
DataLoader/PIL per-sample overhead, which dominates a DARTS supernet step on small images, and the same data
path on CPU and GPU. Every random draw of an epoch comes from CPU generators seeded by (seed, stream, epoch),
so a resumed run replays identical batches with no saved loader state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from ostr_ray.data.images import AugmentSpec, DataError, ImageData, seeded_generator

SEED_HIGH = (1 << 63) - 1
ImageTransform = Callable[[Tensor], Tensor]
"""A per-image hook: uint8 (C, H, W) -> uint8 (C, H, W), e.g. torchvision's ``v2.RandAugment()``."""


class Batches(Protocol):
    """What a search or training loop needs from a stream; :class:`BatchStream` and the streamed
    :class:`~ostr_ray.data.streaming.StreamedBatchStream` both are one."""

    batch_size: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, *, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]: ...


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    """``(rank, world_size)``, ``(0, 1)`` when unsharded; DataError naming a bad pair."""
    rank, world = shard if shard is not None else (0, 1)
    if world < 1 or not 0 <= rank < world:
        raise DataError(f"shard {shard} must be (rank, world_size) with 0 <= rank < world_size")
    return int(rank), int(world)


def shard_positions(total: int, shard: tuple[int, int]) -> slice:
    """The epoch positions one rank keeps: the order truncated to a multiple of the world size, then
    ``rank::world_size`` (what ``DistributedSampler(shuffle=True, drop_last=True)`` does)."""
    rank, world = shard
    return slice(rank, (total // world) * world, world)


def check_batch_size(total: int, batch_size: int, *, drop_last: bool, world: int = 1) -> None:
    per_shard = total // world
    if batch_size < 1 or (drop_last and batch_size > per_shard):
        shards = f" x {world} shards" if world > 1 else ""
        raise DataError(
            f"batch size {batch_size}{shards} does not fit {total} images"
            + (" (drop_last would leave no batch)" if batch_size >= 1 else "")
        )


def batch_count(items: int, batch_size: int, *, drop_last: bool) -> int:
    return items // batch_size if drop_last else math.ceil(items / batch_size)


def apply_seeded(transform: ImageTransform, image: Tensor, seed: int) -> Tensor:
    """``transform(image)`` with torch's CPU generator seeded to ``seed`` and restored afterwards.

    torchvision's random transforms draw their parameters from that global generator and take no generator
    argument; pinning it per image makes each image's draws a pure function of its seed (whichever process
    or worker runs it) while the caller's own random stream is left exactly as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would reseed CUDA too
        return transform(image)


def cutout_mask(centers: Tensor, size: int, h: int, w: int) -> Tensor:
    """(B, 1, H, W) mask of the square ``[c - size//2, c + size//2)`` per sample, border-clipped as DARTS."""
    half = size // 2
    ys = torch.arange(h, device=centers.device)
    xs = torch.arange(w, device=centers.device)
    in_rows = (ys >= centers[:, :1] - half) & (ys < centers[:, :1] + half)
    in_cols = (xs >= centers[:, 1:] - half) & (xs < centers[:, 1:] + half)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


class _EpochPlan(NamedTuple):
    """All random draws of one epoch, position-aligned, so any batch can be rebuilt on its own."""

    order: Tensor
    offsets: Tensor | None  # (N, 2) crop offsets in [0, 2 * padding]
    flips: Tensor | None  # (N,) bool
    centers: Tensor | None  # (N, 2) cutout centres
    seeds: Tensor | None  # (N,) per-image seeds of the image transform (kept on CPU)


class BatchStream:
    """Deterministic, augmented minibatches from an in-memory ImageData on one device.

    The order and augmentation of epoch ``e`` are a pure function of ``(seed, stream_id, e)``: resuming
    at an epoch (or a batch, with ``start_batch``) replays identical batches with no saved state. Random
    draws happen on CPU generators, so CPU and GPU runs see the same data. The uint8 images move to the
    device once; each batch is gathered, cropped and flipped in one indexing op, then converted to float,
    normalised and cut out, all batched. ``stream_id`` separates streams that share a seed (e.g. the
    weight and architecture halves of a search).

    ``shard=(rank, world_size)`` keeps one DDP rank's share: every rank draws the same permutation of the
    whole set (and its augmentation, position-aligned) and keeps :func:`shard_positions`, so the shards are
    disjoint, cover the epoch, are equally long (every rank takes the same number of DDP steps) and reshuffle
    every epoch. ``batch_size`` is then per rank. ``image_transform`` runs per image on uint8 after crop and
    flip, before normalisation and cutout (RandAugment when retraining, RandomResizedCrop in a search): each
    image under its own seed drawn with the epoch's plan (:func:`apply_seeded`), so its draws replay at any
    batch and do not depend on the number of shards. ``indices`` restricts the stream to those images of
    ``data``: the two halves of a search split then index one shared tensor instead of each holding a copy.
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
        shard: tuple[int, int] | None = None,
        image_transform: ImageTransform | None = None,
        indices: Tensor | None = None,
    ) -> None:
        self.shard = check_shard(shard)
        self.size = len(data) if indices is None else len(indices)
        check_batch_size(self.size, batch_size, drop_last=drop_last, world=self.shard[1])
        self.batch_size = batch_size
        self.seed, self.stream_id, self.augment = seed, stream_id, augment
        self.drop_last, self.channels_last = drop_last, channels_last
        self.image_transform = image_transform
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.index = None if indices is None else indices.to(self.device)
        labels = data.labels.to(self.device)
        self.labels = labels if self.index is None else labels[self.index]  # this stream's own, by position
        std = torch.tensor(data.std, dtype=torch.float32)
        mean = torch.tensor(data.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)
        self._shift = (mean / std).view(1, -1, 1, 1).to(self.device)

    def __len__(self) -> int:
        return batch_count(self.size // self.shard[1], self.batch_size, drop_last=self.drop_last)

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
        """Draw the epoch's order and augmentation for the whole set on CPU (device-independent), keep this
        shard's positions, then move them to the device once."""
        n, spec = self.size, self.augment
        order = torch.randperm(n, generator=seeded_generator("order", self.seed, self.stream_id, epoch))
        g = seeded_generator("augment", self.seed, self.stream_id, epoch)
        h, w = self.images.shape[-2:]
        pad = spec.random_crop_padding
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g) if pad else None
        flips = torch.rand(n, generator=g) < 0.5 if spec.horizontal_flip else None
        centers = None
        if spec.cutout:
            centers = torch.stack(
                [torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)], dim=1
            )
        seeds = torch.randint(0, SEED_HIGH, (n,), generator=g) if self.image_transform is not None else None
        keep = shard_positions(n, self.shard) if self.shard[1] > 1 else slice(None)
        moved = [None if t is None else t[keep].to(self.device, non_blocking=True) for t in (order, offsets, flips)]
        centers = None if centers is None else centers[keep].to(self.device, non_blocking=True)
        return _EpochPlan(*moved, centers, None if seeds is None else seeds[keep])

    def _batch(self, plan: _EpochPlan) -> tuple[Tensor, Tensor]:
        idx = plan.order if self.index is None else self.index[plan.order]
        if plan.offsets is None and plan.flips is None:
            x = self.images[idx]
        else:
            x = self._crop_flip(idx, plan.offsets, plan.flips)
        if plan.seeds is not None:
            x = torch.stack([apply_seeded(self.image_transform, im, s) for im, s in zip(x, plan.seeds.tolist())])
        x = torch.addcmul(-self._shift, x.float(), self._scale) if self.augment.normalize else x.float().div_(255.0)
        if plan.centers is not None:
            mask = cutout_mask(plan.centers, self.augment.cutout, x.shape[-2], x.shape[-1])
            x = x.masked_fill_(mask, 0.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[plan.order]

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
