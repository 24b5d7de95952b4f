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

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

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

        with remote_errors(self.root):
            fs, root = _filesystem(self.root)
            return fs.get_file_info(f"{root}/{name}".rstrip("/")).type != pyarrow.fs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if not self.is_remote:
            file = Path(self.root, name)
            return file.read_bytes() if file.is_file() else None
        import pyarrow.fs

        with remote_errors(self.root):
            fs, root = _filesystem(self.root)
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
            with remote_errors(self.root, writing=True):
                fs, root = _filesystem(self.root)
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

    def names(self) -> list[str]:
        """The names of the files directly under the root, sorted (none when the root does not exist)."""
        if not self.is_remote:
            root = Path(self.root)
            return sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []
        import pyarrow.fs

        with remote_errors(self.root):
            fs, root = _filesystem(self.root)
            found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
            return sorted(Path(f.path).name for f in found if f.type == pyarrow.fs.FileType.File)

    def remove(self) -> None:
        """Delete the root folder and everything in it (nothing happens when it does not exist)."""
        if not self.is_remote:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        import pyarrow.fs

        with remote_errors(self.root, writing=True):
            fs, root = _filesystem(self.root)
            if fs.get_file_info(root).type != pyarrow.fs.FileType.NotFound:
                fs.delete_dir(root)


class StorageError(ValueError):
    """Remote storage that cannot be used; the message names the cause (and, from :class:`Storage`, the URI)."""


_CHECKED: set[Any] = set()
"""Endpoints and buckets this process has checked once (each before its first use, then trusted)."""


def _filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for ``uri`` and the path in it. The first use of an endpoint and of a bucket checks
    them, so that what is wrong is said: an endpoint nothing listens on fails in milliseconds (pyarrow would
    first spend its retries resolving the bucket's region), and a missing bucket is named as such (to pyarrow
    it is only a file that is not found)."""
    import pyarrow.fs

    endpoint = _endpoint(uri)
    if endpoint is not None and endpoint not in _CHECKED:
        _check_endpoint(uri)
        _CHECKED.add(endpoint)
    fs, path = _from_uri(uri)
    bucket = (endpoint, urlparse(uri).scheme, path.split("/", 1)[0])
    if bucket not in _CHECKED:
        if fs.get_file_info(bucket[2]).type == pyarrow.fs.FileType.NotFound:
            raise StorageError(f"bucket {bucket[2]!r} does not exist")
        _CHECKED.add(bucket)
    return fs, path


def _from_uri(uri: str) -> tuple[Any, str]:
    """``pyarrow.fs.FileSystem.from_uri``; on S3 with delayed opens, so that a small file (every record this
    module writes) is one PutObject when it is closed instead of a three-request multipart upload."""
    import pyarrow.fs

    parsed = urlparse(uri)
    if parsed.scheme == "s3" and "allow_delayed_open" not in parse_qs(parsed.query):
        uri = parsed._replace(query="&".join(filter(None, [parsed.query, "allow_delayed_open=true"]))).geturl()
    return pyarrow.fs.FileSystem.from_uri(uri)


@contextmanager
def remote_errors(uri: str, *, writing: bool = False) -> Iterator[None]:
    """pyarrow's OSError as a :class:`StorageError` that says which URI and what to check, in one line."""
    try:
        yield
    except StorageError as exc:
        raise StorageError(f"{uri}: {exc}") from None
    except OSError as exc:
        raise StorageError(f"{uri}: {_cause(exc, writing=writing)}") from None


PROBE = ".ostr-ray-write-check"
CONNECT_TIMEOUT_S = 5


def check_remote_writable(uri: str) -> None:
    """Can this process read and write under ``uri``, as Ray Tune will? :class:`StorageError` with the cause if not.

    Asked the way Ray asks (``pyarrow.fs`` from the URI, credentials and endpoint from the standard AWS
    environment) and in the order a user can act on: the endpoint answers, the credentials are accepted, the
    bucket exists, a file can be written. The write is a zero-byte probe, deleted again with any folder it
    implied; a failed check writes nothing. (pyarrow keeps folders as zero-byte markers, so a probe under a
    prefix that exists only implicitly, through its files, leaves that prefix's marker.)
    """
    import pyarrow.fs

    _check_endpoint(uri)
    try:
        fs, root = _from_uri(uri)
        root = root.rstrip("/")
        bucket = root.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
            raise StorageError(f"bucket {bucket!r} does not exist")
        missing = _topmost_missing(fs, root)
        if missing is None and fs.get_file_info(root).type == pyarrow.fs.FileType.File:
            raise StorageError(f"{root} is a file, not a folder")
    except OSError as exc:
        raise StorageError(_cause(exc, writing=False)) from None
    probe = f"{root}/{PROBE}-{os.getpid()}"
    try:
        with fs.open_output_stream(probe) as stream:
            stream.write(b"")
    except OSError as exc:
        raise StorageError(_cause(exc, writing=True)) from None
    if missing:
        fs.delete_dir(missing)
    else:
        fs.delete_file(probe)


def _endpoint(uri: str) -> tuple[str, str] | None:
    """The custom endpoint ``uri`` is served from (its ``endpoint_override``, or ``AWS_ENDPOINT_URL`` for s3://)
    and where it was set; None for the provider's own endpoint."""
    parsed = urlparse(uri)
    endpoint, source = (parse_qs(parsed.query).get("endpoint_override") or [None])[0], "endpoint_override"
    if not endpoint and parsed.scheme == "s3":
        endpoint, source = os.environ.get("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"
    return (endpoint, source) if endpoint else None


def _check_endpoint(uri: str) -> None:
    """A custom endpoint that nothing listens on fails in milliseconds here, not after the S3 client's retries."""
    found = _endpoint(uri)
    if found is None:
        return
    endpoint, source = found
    where = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = where.port or (443 if where.scheme == "https" else 80)
    try:
        socket.create_connection((where.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise StorageError(f"cannot connect to the endpoint {endpoint} ({source}): {exc.strerror or exc}") from None


def _topmost_missing(fs: object, root: str) -> str | None:
    """The outermost folder of ``root`` (below its bucket) that does not exist yet; None if ``root`` exists."""
    import pyarrow.fs

    parts = root.split("/")
    missing = None
    for depth in range(len(parts), 1, -1):
        path = "/".join(parts[:depth])
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            break
        missing = path
    return missing


def _cause(exc: OSError, *, writing: bool) -> str:
    """pyarrow's S3 error, as what the user should check."""
    text = " ".join(str(exc).split())
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "Forbidden" in text or "InvalidAccessKeyId" in text:
        if writing:
            return "access denied when writing: these credentials may read this prefix but not write to it"
        return (
            "access denied: the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the AWS profile) "
            "are wrong or may not read this bucket"
        )
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "curlCode" in text:
        return "cannot connect to the storage endpoint (check AWS_ENDPOINT_URL and the network)"
    if "resolving region" in text:
        return "cannot find the bucket's region (set AWS_DEFAULT_REGION; check AWS_ENDPOINT_URL and the network)"
    return text if len(text) <= 300 else text[:299] + "…"
