"""Streamed batches for trees too big to decode into memory (ImageNet search and retraining).

:class:`StreamedBatchStream` has :class:`~ostr_ray.data.stream.BatchStream`'s interface: ``len()`` and
``epoch(e, start_batch=b)`` yielding normalised float batches on the stream's device. JPEGs are decoded by
torchvision in DataLoader worker processes, one whole batch per worker task, so memory is bounded by the
batches in flight (``workers x prefetch``), not by the data set.

Determinism: the epoch's order and one 63-bit seed per position are drawn in this process from generators
seeded by (seed, stream_id, epoch), like BatchStream's plan. A worker seeds torch's CPU generator with the
position's seed just before it runs the torchvision transform on that image (and restores it after), so
every crop and flip is a pure function of (seed, stream_id, epoch, position): order AND pixels replay exactly
after a resume at any batch, with any number of workers (0 decodes in this process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ostr_ray.data.decode import decode_file
from ostr_ray.data.folders import FileList, class_folder_check, split_dir
from ostr_ray.data.images import IMAGENET_MEAN, IMAGENET_STD, DataError, seeded_generator
from ostr_ray.data.stream import (
    SEED_HIGH,
    ImageTransform,
    apply_seeded,
    batch_count,
    check_batch_size,
    check_shard,
    cutout_mask,
    shard_positions,
)


def random_resized_crop(image_size: int, *, flip: bool = True) -> ImageTransform:
    """PC-DARTS' ImageNet search augmentation: RandomResizedCrop(size) (+ horizontal flip), uint8 in and out."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(image_size, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def resize_pad_crop(image_size: int, *, padding: int, flip: bool = True) -> ImageTransform:
    """The DARTS crop on a streamed file: resize to ``size x size`` (as the in-memory loader does), then a
    zero-padded random crop back to that size (+ horizontal flip), uint8 in and out."""
    from torchvision.transforms import v2

    steps = [v2.Resize((image_size, image_size), antialias=True)]
    if padding:
        steps.append(v2.RandomCrop(image_size, padding=padding))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class FileSamples(torch.utils.data.Dataset):
    """The files of a :class:`FileList`, each decoded and transformed under its own seed.

    Hand-rolled rather than torchvision's ``DatasetFolder`` because a key carries the sample's seed with the
    file index, and ``__getitems__`` returns a whole collated uint8 batch (one inter-process message per
    batch); the decoding and the transforms are torchvision's.
    """

    def __init__(self, files: FileList, transform: ImageTransform) -> None:
        self.files, self.transform = files, transform

    def sample(self, index: int, seed: int) -> Tensor:
        """File ``index`` decoded and transformed under ``seed`` (:func:`~ostr_ray.data.stream.apply_seeded`)."""
        return apply_seeded(self.transform, decode_file(self.files.path(index)), seed)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        return self.sample(*key), int(self.files.labels[key[0]])

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[Tensor, Tensor] | str:
        try:
            images = torch.stack([self.sample(i, s) for i, s in keys])
        except DataError as err:  # returned, so the training process raises it as one line
            return str(err)
        return images, self.files.labels[[i for i, _ in keys]]


def _as_is(batch: object) -> object:
    """``collate_fn``: ``__getitems__`` already collated (module level, so spawned workers can pickle it)."""
    return batch


class _BatchKeys:
    """The batch sampler of one epoch from ``start``: lists of (file index, sample seed), built lazily."""

    def __init__(self, order: Tensor, seeds: Tensor, batch_size: int, start: int, stop: int) -> None:
        self.order, self.seeds, self.batch_size, self.start, self.stop = order, seeds, batch_size, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(self.start, self.stop):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield list(zip(self.order[sl].tolist(), self.seeds[sl].tolist()))


class StreamPlan(NamedTuple):
    """An epoch's draws for this stream's positions: file order, one transform seed each, cutout centres."""

    order: Tensor
    seeds: Tensor
    centers: Tensor | None


class StreamedBatchStream:
    """Deterministic augmented batches decoded from a file list in DataLoader workers (module docstring).

    ``transform`` maps a decoded uint8 (3, H, W) image to uint8 (3, S, S) drawing only from torch's CPU
    generator (any torchvision v2 transform does); it defaults to :func:`random_resized_crop`. ``cutout`` is
    applied batched on the device after normalisation, as in BatchStream. ``shard`` works as BatchStream's.
    Each ``epoch()`` call builds its own DataLoader (workers start when its first batch is asked for), so
    iterators of several epochs are independent and an abandoned one just stops its workers.
    """

    def __init__(
        self,
        files: FileList,
        batch_size: int,
        *,
        seed: int,
        image_size: int,
        transform: ImageTransform | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        cutout: int = 0,
        normalize: bool = True,
        device: str | torch.device = "cpu",
        drop_last: bool = True,
        channels_last: bool = False,
        stream_id: int = 0,
        shard: tuple[int, int] | None = None,
        num_workers: int = 0,
    ) -> None:
        self.shard = check_shard(shard)
        check_batch_size(len(files), batch_size, drop_last=drop_last, world=self.shard[1])
        if num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {num_workers}")
        self.files, self.batch_size, self.image_size = files, batch_size, image_size
        self.seed, self.stream_id, self.cutout, self.normalize = seed, stream_id, cutout, normalize
        self.drop_last, self.channels_last, self.num_workers = drop_last, channels_last, num_workers
        self.device = torch.device(device)
        self.samples = FileSamples(files, transform or random_resized_crop(image_size))
        std_t, mean_t = torch.tensor(std, dtype=torch.float32), torch.tensor(mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self._shift = (mean_t / std_t).view(1, -1, 1, 1).to(self.device)

    def __len__(self) -> int:
        return batch_count(len(self.files) // self.shard[1], self.batch_size, drop_last=self.drop_last)

    def plan(self, epoch: int) -> StreamPlan:
        """The epoch's draws for this shard's positions (the same order BatchStream draws for that seed)."""
        n = len(self.files)
        order = torch.randperm(n, generator=seeded_generator("order", self.seed, self.stream_id, epoch))
        g = seeded_generator("augment", self.seed, self.stream_id, epoch)
        seeds = torch.randint(0, SEED_HIGH, (n,), generator=g)
        centers = None
        if self.cutout:
            size = self.image_size
            centers = torch.stack([torch.randint(0, size, (n,), generator=g) for _ in range(2)], dim=1)
        keep = shard_positions(n, self.shard)
        return StreamPlan(order[keep], seeds[keep], None if centers is None else centers[keep])

    def epoch(self, epoch: int, *, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``(float images (B, 3, S, S), int64 labels (B,))`` of an epoch, from ``start_batch``."""
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise DataError(f"epoch {epoch} / start_batch {start_batch} out of range (0.., 0..{len(self)})")
        return self._batches(self.plan(epoch), start_batch)

    def _batches(self, plan: StreamPlan, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        keys = _BatchKeys(plan.order, plan.seeds, self.batch_size, start, len(self))
        loader = torch.utils.data.DataLoader(
            self.samples,
            batch_sampler=keys,
            num_workers=self.num_workers,
            collate_fn=_as_is,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # the loader's base seed must not draw on the global one
        )
        for b, batch in zip(range(start, len(self)), loader):
            if isinstance(batch, str):
                raise DataError(batch)
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self._finish(*batch, None if plan.centers is None else plan.centers[sl])

    def _finish(self, images: Tensor, labels: Tensor, centers: Tensor | None) -> tuple[Tensor, Tensor]:
        """On the device: to float, normalise, cut out, lay out."""
        x = images.to(self.device, non_blocking=True).float()
        x = torch.addcmul(-self._shift, x, self._scale) if self.normalize else x.div_(255.0)
        if centers is not None:
            x = x.masked_fill_(cutout_mask(centers.to(self.device), self.cutout, x.shape[-2], x.shape[-1]), 0.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels.to(self.device, non_blocking=True)


def make_imagefolder_loader(
    root: str | Path,
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
    image_transform: Callable[[Tensor], Tensor] | None = None,
) -> torch.utils.data.DataLoader:
    """The retraining loader for ImageNet-scale trees: torchvision's ImageFolder and a DataLoader.

    Standard ImageNet transforms: RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.2) for training,
    Resize(256/224 * size) + CenterCrop(size) for evaluation; ``image_transform`` (e.g. RandAugment) runs
    after those, before conversion to float. With ``distributed`` it shards through a DistributedSampler
    (rank/world from the arguments or torch.distributed); the caller must call
    ``loader.sampler.set_epoch(epoch)`` each epoch so shards reshuffle.
    """
    from torchvision import datasets
    from torchvision.transforms import v2

    folder = split_dir(Path(root), train)
    class_folder_check(folder)
    if train:
        head = [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.4, 0.4, 0.4, 0.2),
        ]
    else:
        head = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    if image_transform is not None:
        head.append(image_transform)
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
