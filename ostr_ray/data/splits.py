"""Seeded subsets and the search's train/val split, drawn from labels alone.

Both work on anything labelled and indexable: an in-memory :class:`ImageData` or a :class:`FileList` of a
tree not yet decoded. The choice depends only on the labels, the seed and the sizes, so drawing it on the
file list and decoding the chosen files gives exactly the images that decoding everything and then drawing
would have given (the ImageNet search decodes 12.5% of the tree, not all of it).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch
from torch import Tensor

from ostr_ray.data.images import DataError, seeded_generator


class Labelled(Protocol):
    labels: Tensor

    @property
    def num_classes(self) -> int: ...

    def __len__(self) -> int: ...

    def take(self, indices: Tensor) -> Labelled: ...


T = TypeVar("T", bound=Labelled)


def subset_indices(labels: Tensor, num_classes: int, n: int, seed: int, *, per_class: bool = True) -> Tensor:
    """Sorted indices of ``n`` seeded items, as class-balanced as the labels allow when ``per_class``.

    Balance is by round-robin over classes in a seeded order: every class gives its k-th random item before
    any gives its (k+1)-th, so small classes are used up and the rest fill in from the others.
    """
    total = len(labels)
    if not 1 <= n <= total:
        raise DataError(
            f"subset size {n} is larger than the {total} images available"
            if n > total
            else f"subset size must be >= 1, got {n}"
        )
    g = seeded_generator("subset", seed, n)
    perm = torch.randperm(total, generator=g)
    if not per_class:
        return perm[:n].sort().values
    shuffled = labels[perm]
    order = torch.argsort(shuffled, stable=True)
    sorted_labels = shuffled[order]
    counts = torch.bincount(sorted_labels, minlength=num_classes)
    rank_in_class = torch.arange(total) - (torch.cumsum(counts, 0) - counts)[sorted_labels]
    class_rank = torch.randperm(len(counts), generator=g)
    key = rank_in_class * len(counts) + class_rank[sorted_labels]
    return perm[order[torch.argsort(key)[:n]]].sort().values


def subset_count(total: int, fraction: float) -> int:
    """Items a ``subset_fraction`` keeps of ``total``: rounded, and at least one per half of the search's split."""
    return max(2, round(fraction * total))


def subset(data: T, n: int, seed: int, *, per_class: bool = True) -> T:
    """``n`` seeded items of ``data`` (see :func:`subset_indices`), kept in data order."""
    return data.take(subset_indices(data.labels, data.num_classes, n, seed, per_class=per_class))


def split_indices(
    total: int,
    seed: int,
    *,
    fraction: float = 0.5,
    train_size: int | None = None,
    val_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Sorted (weight-training, architecture-validation) indices of a seeded permutation of ``total`` items.

    This is the DARTS/NAS-Bench-201 search convention; ``train_size``/``val_size`` cap each half.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {fraction}")
    n_train = int(round(total * fraction))
    if not 0 < n_train < total:
        raise DataError(f"cannot split {total} images with fraction {fraction}: a half would be empty")
    perm = torch.randperm(total, generator=seeded_generator("search-split", seed))
    halves = []
    for idx, cap, what in ((perm[:n_train], train_size, "train_size"), (perm[n_train:], val_size, "val_size")):
        if cap is not None and not 1 <= cap <= len(idx):
            raise DataError(
                f"{what} {cap} is larger than the {len(idx)} images available in that half"
                if cap > len(idx)
                else f"{what} must be >= 1, got {cap}"
            )
        halves.append(idx[:cap].sort().values)
    return halves[0], halves[1]


def search_split(
    data: T,
    seed: int,
    *,
    fraction: float = 0.5,
    train_size: int | None = None,
    val_size: int | None = None,
) -> tuple[T, T]:
    """Split a training set into (weight-training, architecture-validation) halves; see :func:`split_indices`."""
    train, val = split_indices(len(data), seed, fraction=fraction, train_size=train_size, val_size=val_size)
    return data.take(train), data.take(val)
