"""Writing the evidence into the launch directory (figures, ``evidence.md``, ``evidence.json``) through its
:class:`~ostr_ray.experiment.LaunchDir` storage (local or remote alike), and logging it to the launch's MLflow
parent run as its :class:`~ostr_ray.experiment.MlflowRunMap` names it. MLflow is imported only in
:func:`log_to_mlflow`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ostr_ray.evidence.build import to_json
from ostr_ray.evidence.figures import make_figures
from ostr_ray.evidence.render import render_markdown
from ostr_ray.experiment import LaunchDir, LaunchDirError
from ostr_ray.experiment.layout import EVIDENCE_JSON, EVIDENCE_MARKDOWN


def write_outputs(evidence: dict[str, Any], path: str | None = None, *, report: Any = None) -> list[str]:
    """Write the figures, ``evidence.md`` and ``evidence.json`` (with ``report``, the launch report, when
    given) into the launch directory; returns the written paths and records the figure names in
    ``evidence['figures']``."""
    storage = LaunchDir(path or evidence["experiment_path"]).storage
    written = []
    figures = make_figures(evidence)
    evidence["figures"] = list(figures)
    for name, data in figures.items():
        written.append(storage.write_bytes(name, data))
    written.append(storage.write_text(EVIDENCE_MARKDOWN, render_markdown(evidence)))
    payload = to_json(evidence, **({"report": report} if report is not None else {}))
    written.append(storage.write_text(EVIDENCE_JSON, json.dumps(payload, indent=1)))
    return written


# ============================================================================================ MLflow (optional)


def mlflow_parent_run(path: str) -> tuple[str, str | None] | None:
    """``(parent run id, tracking URI)`` of the launch at ``path`` from its MLflow run map, or ``None`` when it
    has none (or no parent run). The launch's own store is opened where the directory is now."""
    launch = LaunchDir(path)
    try:
        runs = launch.read_runs()
    except LaunchDirError:
        return None
    if runs is None or not runs.parent_run_id:
        return None
    from ostr_ray.tracking.store import launch_store_uri

    return runs.parent_run_id, launch_store_uri(launch)


def log_to_mlflow(path: str, files: Sequence[str], artifact_path: str | None = None) -> str | None:
    """Log ``files`` on the launch's MLflow parent run (under ``artifact_path``, default the tracking schema's
    evidence folder) when the launch's run map names one.

    Returns a one-line message, or ``None`` when there is no run mapping (then nothing is attempted). Failures
    are reported in the message, never raised: the evidence is already written.
    """
    target = mlflow_parent_run(path)
    if target is None:
        return None
    run_id, uri = target
    local = [f for f in files if "://" not in f and Path(f).is_file()]
    try:
        from ostr_ray.tracking.runs import log_files
        from ostr_ray.tracking.schema import EVIDENCE_DIR

        log_files(uri, run_id, local, artifact_path or EVIDENCE_DIR)
    except Exception as exc:  # an unreachable server must not fail a report that is already written
        return f"MLflow logging skipped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return f"logged {len(local)} evidence files to MLflow run {run_id}"
