"""Image decoding and resizing, shared by the in-memory loader and the streamed path.

Decoding is torchvision's (``torchvision.io``; PIL for the formats it cannot read). Many files decode in a few
DataLoader worker processes: torchvision's decoders hold the GIL, so threads would not help, and the
DataLoader brings robust fork handling and one intra-op thread per worker.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ostr_ray.data.images import DataError

_TV_IO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
_PARALLEL_DECODE_MIN = 4096  # below this, worker start-up costs more than it saves
_DECODE_CHUNK = 256  # files per worker task: at 224px, 2 x 38 MiB of transient (the list and its stack)


def decode_file(path: Path) -> Tensor:
    """One image as uint8 (3, H, W); grayscale and alpha images become RGB."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        if path.suffix.lower() in _TV_IO_EXTENSIONS:
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
                warnings.filterwarnings("ignore", ".*decoding and encoding capabilities", DeprecationWarning)
                return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        from PIL import Image  # bmp/ppm/tif: formats torchvision.io cannot decode

        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (RuntimeError, OSError, ValueError) as err:
        raise DataError(f"cannot decode image {path}: {' '.join(str(err).split())}") from err


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) from the file's header only (PIL reads no pixels), to size a decode before doing it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except OSError as err:
        raise DataError(f"cannot read image header {path}: {' '.join(str(err).split())}") from err
    return height, width


def resize(images: Tensor, image_size: int) -> Tensor:
    """Antialiased bilinear resize of a uint8 batch, in chunks to bound the float scratch memory."""
    from torchvision.transforms.v2 import functional as TF

    if tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    chunks = [TF.resize(c, [image_size, image_size], antialias=True) for c in images.split(8192)]
    return torch.cat(chunks) if chunks else images.new_empty((0, images.shape[1], image_size, image_size))


def decode_chunk(paths: Sequence[Path], image_size: int | None) -> Tensor:
    """Decode (and resize) a few files into one uint8 (N, 3, H, W) tensor; DataError on mixed sizes."""
    images = [decode_file(p) for p in paths]
    if image_size is not None:
        if len({tuple(im.shape) for im in images}) == 1:
            return resize(torch.stack(images), image_size)
        images = [resize(im[None], image_size)[0] for im in images]
    _require_one_size({tuple(im.shape) for im in images})
    return torch.stack(images)


def decode_files(paths: list[Path], image_size: int | None) -> Tensor:
    """Decode every file, in chunks, in a few worker processes once there are enough files to pay for them.

    Chunks are copied into one preallocated tensor as they arrive, so the peak is the decoded set plus the
    chunks in flight, not twice the set (a concatenation at the end would need both).
    """
    workers = 0 if len(paths) < _PARALLEL_DECODE_MIN else min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(_DecodeChunks(paths, image_size), batch_size=None, num_workers=workers)
    out: Tensor | None = None
    for i, chunk in enumerate(loader):
        if isinstance(chunk, str):
            raise DataError(chunk)
        if out is None:
            out = chunk.new_empty((len(paths), *chunk.shape[1:]))
        _require_one_size({tuple(out.shape[1:]), tuple(chunk.shape[1:])})
        out[i * _DECODE_CHUNK : i * _DECODE_CHUNK + len(chunk)] = chunk
    if out is None:
        raise DataError("no images to decode")
    return out


def _require_one_size(shapes: set[tuple[int, ...]]) -> None:
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}; pass image_size to resize them")


class _DecodeChunks(torch.utils.data.Dataset):
    """Chunks of paths, so DataLoader workers decode them (see the module docstring)."""

    def __init__(self, paths: list[Path], image_size: int | None) -> None:
        self.chunks = [paths[i : i + _DECODE_CHUNK] for i in range(0, len(paths), _DECODE_CHUNK)]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Tensor | str:
        try:
            return decode_chunk(self.chunks[i], self.image_size)
        except DataError as err:  # returned, so the parent re-raises it as a one-line DataError
            return str(err)
