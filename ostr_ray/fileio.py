"""Atomic local file writes: the one way every layer writes a file a reader might see half-written.

A file is written beside its target under a unique temporary name and moved into place with ``os.replace``,
which is atomic on POSIX: a reader (another seed, ``ostr-ray status``, Tune's sync) sees the old file or the
new one, never a torn one, and a crash leaves at most a stray temporary file. Standard library only, so the
data layer, the search core and the experiment directory can all use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` to produce the file (``torch.save``, ``np.save`` ...), then move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode())
