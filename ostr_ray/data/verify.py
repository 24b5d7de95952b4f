"""A full decode check of the files a search will read, paid once per tree state.

A corrupt or truncated JPEG otherwise surfaces inside every trial that draws it, as a failed trial per seed.
The launch's pre-flight decodes the chosen files first (in worker processes) and remembers a good check by
the files' fingerprint (which files, their newest mtime), so the next launch on the same tree skips it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ostr_ray.data.cache import cache_dir, files_fingerprint
from ostr_ray.data.decode import decode_file
from ostr_ray.data.folders import FileList
from ostr_ray.data.images import DataError

_CHUNK = 256


class _CheckChunks(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> str:
        """'' when every file of the chunk decodes, else the first one's one-line error."""
        for path in self.chunks[i]:
            try:
                decode_file(path)
            except DataError as err:
                return str(err)
        return ""


def verify_files(files: FileList, workers: int | None = None) -> bool:
    """DataError (one line naming the file) unless every file decodes; True when it checked, False when a
    previous check of the same files is on record."""
    marker = cache_dir() / "verified" / hashlib.sha256(files_fingerprint(files).encode()).hexdigest()[:24]
    if marker.is_file():
        return False
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _CheckChunks(files.paths()), batch_size=None, num_workers=workers if len(files) > _CHUNK else 0
    )
    for problem in loader:
        if problem:
            raise DataError(problem)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{files.root}\n{len(files)} files decoded\n")
    return True
