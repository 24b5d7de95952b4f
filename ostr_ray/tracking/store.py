"""Which MLflow store a launch or a retrain records into, a fail-fast check that it works, and the UI backend.

Recording goes through an explicit :class:`mlflow.MlflowClient` with an explicit tracking URI: never the fluent
API's global active run, never an implicit ``./mlruns`` (MLflow 3 refuses the plain file store unless allowed,
and a stray ``./mlruns`` in the working directory changes MLflow's default URI).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlparse

from mlflow import MlflowClient

from ostr_ray.experiment import LaunchDir, LaunchDirError
from ostr_ray.experiment.layout import ARTIFACTS, TRACKING_DB
from ostr_ray.tracking import schema

CHECK_TIMEOUT_S = 5
_HTTP_SCHEMES = ("http", "https", "databricks", "databricks-uc")


class TrackingError(ValueError):
    """The MLflow tracking store is unusable; one line naming the URI, raised before any trial starts."""


def default_tracking_uri(launch_path: str) -> str:
    """``sqlite:///<launch dir>/mlflow.db``: the launch's own store, beside its checkpoints."""
    try:
        return LaunchDir(launch_path).tracking_db_uri()
    except LaunchDirError:
        raise TrackingError(
            f"storage {launch_path!r} is remote, so the launch has no local MLflow database: give "
            "--tracking-uri http://<mlflow server> (or set MLFLOW_TRACKING_URI)"
        ) from None


def resolve_tracking_uri(flag: str | None, launch_path: str) -> str:
    """``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > the launch's own SQLite database."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(launch_path)


def is_server(uri: str) -> bool:
    """An MLflow tracking server (HTTP), as opposed to a database or file store this process opens itself."""
    return urlparse(uri).scheme in _HTTP_SCHEMES


def client(uri: str | None) -> MlflowClient:
    quiet_mlflow()
    return MlflowClient(tracking_uri=uri)


def quiet_mlflow() -> None:
    """A new SQLite store logs its schema migrations at INFO; the launch's live view has no room for it. And a
    run ending on a tracking server prints "View run ... at: <url>" on stdout, which is ``--json``'s (the launch
    names its MLflow record itself, on stderr): off unless ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` says."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def new_sqlite_store(db_path: Path) -> None:
    """Create ``db_path`` as an empty MLflow store by copying a schema template, made once per MLflow version.

    A fresh SQLite store runs every one of MLflow's schema migrations: 7 s on this project's CPU machines, the
    largest part of a short launch's fixed cost. The schema depends only on the MLflow version, so the
    migrated empty database is kept in the cache (``$OSTR_RAY_CACHE``) and copied (milliseconds).
    """
    import mlflow
    from filelock import FileLock

    from ostr_ray.data import cache_dir
    from ostr_ray.fileio import atomic_write

    template = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    template.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(template) + ".lock"):
        if not template.is_file():
            atomic_write(template, lambda tmp: client(f"sqlite:///{tmp}").search_experiments(max_results=1))
    atomic_write(db_path, lambda tmp: shutil.copyfile(template, tmp))


def check_tracking_uri(uri: str, timeout: int = CHECK_TIMEOUT_S) -> None:
    """One cheap real call against the store; :class:`TrackingError` (one line naming ``uri``) if it fails.

    HTTP stores are asked with a short timeout and no retries (MLflow's defaults retry for minutes), so an
    unreachable server fails the launch in seconds, before Ray starts. A SQLite store is created here.
    """
    db_path = sqlite_path(uri)
    if db_path is not None and not db_path.exists() and db_path.parent.is_dir():
        new_sqlite_store(db_path)
    settings = {}
    if is_server(uri):
        settings = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    try:
        with _environ(**settings):
            client(uri).search_experiments(max_results=1)
    except Exception as exc:
        if is_server(uri):
            cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
            timed_out = "timed out" in str(exc).lower() or "timeout" in str(exc).lower()
            why = cause.group(1).strip() if cause else f"no answer within {timeout} s" if timed_out else one_line(exc)
            raise TrackingError(f"cannot reach the MLflow server at --tracking-uri {uri!r}: {why}") from None
        why = one_line(exc)
        if urlparse(uri).scheme in ("", "file") and "filesystem tracking backend" in str(exc):
            why = "MLflow 3 refuses the plain file store; use sqlite:///<path>/mlflow.db or an http(s) server"
        raise TrackingError(f"cannot use MLflow tracking URI {uri!r}: {why}") from None


def launch_store_uri(launch: LaunchDir) -> str | None:
    """The store a launch is recorded in, as the directory is now: its own mlflow.db wherever the directory
    moved (relocated first, see :func:`relocate_local_store`), or the server it recorded to; None if neither."""
    try:
        runs = launch.read_runs()
    except LaunchDirError:
        runs = None
    if runs is not None and launch.tracking_uri(runs) and not runs.local_store:
        return runs.tracking_uri
    if not launch.has_tracking_db():
        return None
    relocate_local_store(launch)
    return launch.tracking_db_uri()


def ui_backend_uri(path: str) -> str:
    """The store ``ostr-ray ui PATH`` should open."""
    uri = launch_store_uri(LaunchDir(path))
    if uri is None:
        raise TrackingError(f"no MLflow record in {path!r} (no mlflow_runs.json or mlflow.db); is it a launch?")
    return uri


def relocate_local_store(launch: LaunchDir) -> bool:
    """Point a moved launch directory's own store at where it is now; True if it had moved.

    MLflow keeps absolute artifact locations (per experiment and per run) and we tag the parent run with the
    launch path; it has no API to change either, so after a move they are rewritten in the SQLite file
    directly (three UPDATEs on MLflow's tables), and the launch spec is updated to the new place, which makes
    this a one-time step. A remote store is never touched.
    """
    old = launch.recorded_path()
    if not old or old == launch.path or launch.is_remote or not launch.has_tracking_db():
        return False
    old_uri, new_uri = Path(old, ARTIFACTS).as_uri(), Path(launch.path, ARTIFACTS).as_uri()
    with closing(sqlite3.connect(Path(launch.path) / TRACKING_DB)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old_uri, new_uri))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old_uri, new_uri))
        db.execute("UPDATE tags SET value = ? WHERE key = ? AND value = ?", (launch.path, schema.LAUNCH_PATH, old))
    launch.write_spec(launch.read_spec().moved_to(launch.path))
    return True


def ui_command(launch_path: str) -> str:
    return f"ostr-ray ui {launch_path}"
