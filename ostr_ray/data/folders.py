"""Class-folder trees (``<root>/<class>/**/<image>``, torchvision's ImageFolder layout): scanning them into a
compact file list, finding the train/eval split folders, and the cheap pre-flight checks.

The scan is our own rather than ``torchvision.datasets.folder.make_dataset`` for three reasons: its errors are
one line naming the tree (a launch prints them as they are), hidden folders are skipped, and the result is a
:class:`FileList` whose paths sit in one numpy byte array. A Python list of a million path strings would be
copied page by page into every DataLoader worker as the workers touch the strings' reference counts
(pytorch/pytorch#13246); a numpy array has no per-item objects to touch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ostr_ray.data.images import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""ImageFolder's extensions, so :func:`class_folder_check` counts what torchvision's loaders will read."""


@dataclass(frozen=True, eq=False)
class FileList:
    """The images of a class-folder tree as (relative path, label) pairs, in scan order; nothing decoded.

    Subsets and splits are drawn on this list (from the labels alone), so only the chosen files are ever read.
    """

    root: Path
    names: np.ndarray  # bytes (os.fsencode) of each path relative to ``root``
    labels: Tensor  # int64 (N,)
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def path(self, i: int) -> Path:
        return self.root / os.fsdecode(self.names[i])

    def paths(self) -> list[Path]:
        return [self.root / os.fsdecode(n) for n in self.names]

    def take(self, indices: Tensor) -> FileList:
        """The files at ``indices`` (in that order), same root and classes."""
        idx = indices.cpu().numpy()
        return FileList(self.root, self.names[idx], self.labels[indices.cpu()], self.classes)


def require_dir(path: Path) -> None:
    if not path.is_dir():
        raise DataError(f"data dir {path} " + ("is not a directory" if path.exists() else "does not exist"))


def class_names(root: Path) -> list[str]:
    """Sorted non-hidden sub-folder names: the classes, labelled 0.. in this order (as ImageFolder does)."""
    require_dir(root)
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(root: Path) -> FileList:
    """Every image under ``root/<class>/`` with its label; DataError if ``root`` is not a class-folder tree."""
    classes = class_names(root)
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    names: list[bytes] = []
    counts: list[int] = []
    for cls in classes:
        found = _images_under(root, cls)
        names += found
        counts.append(len(found))
    empty = [cls for cls, count in zip(classes, counts) if not count]
    if empty:
        raise DataError(f"class folder(s) without images under {root}: {', '.join(empty[:5])}")
    labels = torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(counts))
    return FileList(root, np.array(names, dtype=bytes), labels, tuple(classes))


def _images_under(root: Path, cls: str) -> list[bytes]:
    """Relative paths of the images below one class folder: sorted walk, links followed (as ImageFolder)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        found += [os.fsencode(os.path.join(rel, f)) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def class_folder_check(path: str | os.PathLike[str]) -> int:
    """Number of images in a class-folder tree (``<path>/<class>/**/<image>``); DataError if it is not one."""
    return len(scan_class_folders(Path(path)))


def split_dir(data_dir: Path, train: bool) -> Path:
    """train: ``data_dir/train`` if present, else ``data_dir``; eval: ``data_dir/test`` or ``/val``."""
    require_dir(data_dir)
    for sub in ("train",) if train else ("test", "val"):
        if (data_dir / sub).is_dir():
            return data_dir / sub
    if train:
        return data_dir
    raise DataError(f"data dir {data_dir} has no test/ or val/ folder to evaluate on")


def scan_split(data_dir: str | os.PathLike[str], *, train: bool) -> FileList:
    """The file list of a tree's training (or evaluation) split; see :func:`split_dir`."""
    return scan_class_folders(split_dir(Path(data_dir), train))
