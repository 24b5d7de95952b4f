"""Writing the evidence beside report.json (figures, ``evidence.md``, ``evidence.json``) and logging it to the
launch's MLflow parent run. MLflow is imported only in :func:`log_to_mlflow`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ostr_ray.evidence.analysis import to_json
from ostr_ray.evidence.figures import make_figures
from ostr_ray.evidence.loading import _read_text
from ostr_ray.evidence.render import render_markdown

MARKDOWN_FILE = "evidence.md"
JSON_FILE = "evidence.json"
MLFLOW_RUNS_FILE = "mlflow_runs.json"


def _write_bytes(path: str, name: str, data: bytes) -> str:
    """Write ``name`` in the experiment directory (a pyarrow URI, or locally via a temporary file and a rename,
    so a reader never sees half a file); returns the written path."""
    if "://" in path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_output_stream(f"{root}/{name}") as stream:
            stream.write(data)
        return f"{path.rstrip('/')}/{name}"
    file = Path(path) / name
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, file)
    return str(file)


def write_outputs(evidence: dict[str, Any], path: str | None = None, *, report: Mapping | None = None) -> list[str]:
    """Write the figures, ``evidence.md`` and ``evidence.json`` beside report.json; returns the written paths
    and records the figure names in ``evidence['figures']``."""
    path = path or evidence["experiment_path"]
    written = []
    figures = make_figures(evidence)
    evidence["figures"] = list(figures)
    for name, data in figures.items():
        written.append(_write_bytes(path, name, data))
    written.append(_write_bytes(path, MARKDOWN_FILE, render_markdown(evidence).encode()))
    payload = to_json(evidence, **({"report": report} if report is not None else {}))
    written.append(_write_bytes(path, JSON_FILE, json.dumps(payload, indent=1).encode()))
    return written


# ============================================================================================ MLflow (optional)


def mlflow_parent_run(path: str) -> tuple[str, str | None] | None:
    """``(parent run id, tracking URI)`` from the experiment's ``mlflow_runs.json``, or ``None``.

    Accepted shapes: ``{"parent_run_id": ..., "tracking_uri": ...}``, ``{"parent": "<id>"}`` or
    ``{"parent": {"run_id": ..., "tracking_uri": ...}}``, ``{"run_id": ...}``.
    """
    try:
        text = _read_text(path, MLFLOW_RUNS_FILE)
        runs = json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(runs, Mapping):
        return None
    parent = runs.get("parent")
    uri = runs.get("tracking_uri")
    run_id = runs.get("parent_run_id")
    if isinstance(parent, Mapping):
        run_id = run_id or parent.get("run_id")
        uri = uri or parent.get("tracking_uri")
    elif isinstance(parent, str):
        run_id = run_id or parent
    run_id = run_id or runs.get("run_id")
    return (str(run_id), uri) if run_id else None


def log_to_mlflow(path: str, files: Sequence[str], artifact_path: str = "evidence") -> str | None:
    """Log ``files`` on the launch's MLflow parent run when ``mlflow_runs.json`` names one.

    Returns a one-line message, or ``None`` when there is no run mapping (then nothing is attempted). Failures
    are reported in the message, never raised: the evidence is already on disk.
    """
    target = mlflow_parent_run(path)
    if target is None:
        return None
    run_id, uri = target
    local = [f for f in files if "://" not in f and Path(f).is_file()]
    try:
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)  # a SQLite store's migration chatter
        client = MlflowClient(tracking_uri=uri)
        for file in local:
            client.log_artifact(run_id, file, artifact_path=artifact_path)
    except Exception as exc:  # an unreachable server must not fail a report that is already written
        return f"MLflow logging skipped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return f"logged {len(local)} evidence files to MLflow run {run_id}"
