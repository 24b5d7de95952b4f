"""A folder on the local disk or in remote storage (any URI pyarrow's filesystems read: s3://, gs://, ...).

Ray Tune keeps a launch's experiment where ``--storage`` says, so the launch's own files live there too and are
read and written the same way wherever that is: locally through atomic renames (:mod:`ostr_ray.fileio`),
remotely through ``pyarrow.fs`` (which Ray itself uses for its storage, so no extra dependency).

Mirrors: while Tune runs, it periodically copies its driver staging directory over the experiment directory,
so a driver-side file written only to the experiment would be rolled back by the next sync. The
orchestration registers Tune's staging directory as a mirror (:func:`add_mirror`), and every write to that
experiment also goes there.
"""

from __future__ import annotations

from pathlib import Path

from ostr_ray.fileio import atomic_write_bytes

_MIRRORS: dict[str, str] = {}
"""experiment root -> a local directory that receives a copy of every file written to it (Tune's staging)."""


def is_uri(path: str) -> bool:
    return "://" in str(path)


def resolve(path: str | Path) -> str:
    """An absolute local path, or the URI unchanged."""
    return str(path) if is_uri(str(path)) else str(Path(path).expanduser().resolve())


def join(root: str, *names: str) -> str:
    if is_uri(root):
        return "/".join([root.rstrip("/"), *names])
    return str(Path(root, *names))


def add_mirror(root: str, mirror: str) -> None:
    _MIRRORS.setdefault(resolve(root), mirror)


class Storage:
    """Small files (JSON records, PID files, figures) under one root folder, local or remote."""

    def __init__(self, root: str | Path) -> None:
        self.root = resolve(root)

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @property
    def is_remote(self) -> bool:
        return is_uri(self.root)

    def path(self, name: str) -> str:
        return join(self.root, name)

    def child(self, name: str) -> Storage:
        return Storage(self.path(name))

    def exists(self, name: str = "") -> bool:
        if not self.is_remote:
            return Path(self.root, name).exists()
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(self.root)
        return fs.get_file_info(f"{root}/{name}".rstrip("/")).type != pyarrow.fs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if not self.is_remote:
            file = Path(self.root, name)
            return file.read_bytes() if file.is_file() else None
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(self.root)
        if fs.get_file_info(f"{root}/{name}").type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(f"{root}/{name}") as stream:
            return stream.read()

    def read_text(self, name: str) -> str | None:
        data = self.read_bytes(name)
        return None if data is None else data.decode()

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write ``name`` (atomically where local) and to the root's mirror, if any; returns its path."""
        if self.is_remote:
            import pyarrow.fs

            fs, root = pyarrow.fs.FileSystem.from_uri(self.root)
            with fs.open_output_stream(f"{root}/{name}") as stream:
                stream.write(data)
        else:
            atomic_write_bytes(Path(self.root, name), data)
        mirror = _MIRRORS.get(self.root)
        if mirror:
            atomic_write_bytes(Path(mirror, name), data)
        return self.path(name)

    def write_text(self, name: str, text: str) -> str:
        return self.write_bytes(name, text.encode())
