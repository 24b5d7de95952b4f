"""The decoded-image cache: a class-folder selection decoded once to uint8 tensors, then shared.

Several seeds of one experiment often share a machine and read the same files. The first to arrive decodes
under a :class:`filelock.FileLock` and writes the file atomically (:func:`ostr_ray.fileio.atomic_write`); the
others wait on the lock and then read it, so each selection is decoded once and never seen half-written. An
unwritable cache only costs speed: decoding still happens, with a warning.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from ostr_ray.data.folders import FileList
from ostr_ray.fileio import atomic_write

CACHE_VERSION = 2  # 2: keyed by the chosen file list (a subset decodes only its own files)


def cache_dir() -> Path:
    """Decoded-image cache (and default CIFAR download) root: ``$OSTR_RAY_CACHE`` or ~/.cache/ostr_ray."""
    return Path(os.environ.get("OSTR_RAY_CACHE") or Path.home() / ".cache" / "ostr_ray")


def files_fingerprint(files: FileList) -> str:
    """The tree, exactly which files were chosen and their newest mtime: another subset, an added file or an
    edited one each give another fingerprint."""
    newest = max(p.stat().st_mtime_ns for p in files.paths())
    names = hashlib.sha256(b"\0".join(files.names.tolist())).hexdigest()
    return f"{files.root.resolve()}|{len(files)}|{names}|{newest}"


def image_cache_path(label: str, *key: object) -> Path:
    """Where the decoded images identified by ``key`` live: ``<cache dir>/images/<label>-<digest>.pt``, the digest
    taken over ``key`` and :data:`CACHE_VERSION` (so a new format never reads an old file)."""
    fields = "|".join(str(part) for part in (*key, f"v{CACHE_VERSION}"))
    return cache_dir() / "images" / f"{label}-{hashlib.sha256(fields.encode()).hexdigest()[:20]}.pt"


def cache_file(files: FileList, image_size: int | None) -> Path:
    """A class-folder selection's cache path, keyed by the files' fingerprint and the size."""
    return image_cache_path(f"{files.root.name}-{image_size or 'orig'}", files_fingerprint(files), image_size)


def cached(path: Path, decode: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The dict stored at ``path``, or ``decode()``'s result, written there under the lock for the next reader."""
    found = _read(path)
    if found is not None:
        return found
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as err:
        warnings.warn(f"image cache {path} unusable ({err}); decoding without it", stacklevel=3)
        return decode()
    try:
        found = _read(path)  # another process may have decoded it while we waited
        if found is None:
            found = decode()
            try:
                atomic_write(path, lambda tmp: torch.save(found, tmp))
            except OSError as err:
                warnings.warn(f"could not write image cache {path}: {err}", stacklevel=3)
        return found
    finally:
        lock.release()


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # a foreign or truncated file: decode again rather than fail the run
        warnings.warn(f"ignoring unreadable image cache {path}: {err}", stacklevel=3)
        return None
