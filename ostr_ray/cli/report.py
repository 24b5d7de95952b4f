"""``ostr-ray report`` (the paper's tables and figures for a finished launch) and ``ostr-ray ui`` (its MLflow UI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Annotated, Any

import typer

from ostr_ray.cli.errors import cli_errors, err, fail
from ostr_ray.console.format import make_console
from ostr_ray.experiment.storage import StorageError

FORMATS = ("rich", "markdown", "json")


@cli_errors
def report(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory (or URI).")],
    nb201_table: Annotated[
        str | None, typer.Option(help="NB201 ground truth (CSV or NATS); default: launch.json's nb201_table.")
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="rich (terminal tables), markdown, or json (the statistics).")
    ] = "rich",
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    metric: Annotated[
        str | None, typer.Option(help="Ground-truth column for figures and Tables V/VI (default: a *test* one).")
    ] = None,
    write: Annotated[bool, typer.Option(help="Write evidence.md/.json and the PNG figures beside report.json.")] = True,
) -> None:
    """A finished launch's report with the paper-style evidence (tables, figures; see ostr_ray/evidence/)."""
    from ostr_ray import evidence

    fmt = "json" if json_out else format_.lower()
    if fmt not in FORMATS:
        fail(f"--format {format_!r}: choose {', '.join(FORMATS)}")
    experiment = evidence.load_experiment(path)  # no Ray import: reading a report stays fast
    found = evidence.build_evidence(experiment, nb201_table=nb201_table, metric=metric)
    files = _write(evidence, found, experiment) if write else []
    logged = evidence.log_to_mlflow(found["experiment_path"], files) if files else None
    _show(evidence, found, experiment, fmt)
    if fmt != "json":
        for file in files:
            err.print(f"wrote {file}", highlight=False, markup=False)
        if logged:
            err.print(logged, highlight=False, markup=False)


def _write(evidence: Any, found: dict[str, Any], experiment: Any) -> list[str]:
    try:
        return evidence.write_outputs(found, report=experiment.report.to_json())
    except (OSError, StorageError) as exc:
        err.print(f"could not write the evidence files: {exc}", highlight=False, markup=False, style="yellow")
        return []


def _show(evidence: Any, found: dict[str, Any], experiment: Any, fmt: str) -> None:
    from ostr_ray.console.summary import report_table

    if fmt == "json":
        typer.echo(json.dumps(evidence.to_json(found, report=experiment.report.to_json()), indent=1))
    elif fmt == "markdown":
        typer.echo(evidence.render_markdown(found), nl=False)
    else:
        out = make_console()
        out.print(report_table(experiment.report))
        out.print(evidence.render_rich(found))


def _runs_page(path: str) -> str:
    """The launch's runs table (MLflow 3's UI otherwise opens on its GenAI overview), when the id is known."""
    from ostr_ray.experiment import LaunchDir, LaunchDirError

    try:
        runs = LaunchDir(path).read_runs()
    except LaunchDirError:
        return ""
    return f"/#/experiments/{runs.experiment_id}/runs" if runs and runs.experiment_id else ""


@cli_errors
def ui(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory.")],
    port: Annotated[int, typer.Option(help="Port of the MLflow UI (bound to 127.0.0.1).")] = 5000,
) -> None:
    """Open a launch's MLflow record: runs `mlflow ui` on its SQLite store until Ctrl-C."""
    from ostr_ray.experiment import LaunchDir
    from ostr_ray.tracking.store import is_server, ui_backend_uri

    _check_port_free(port)
    uri = ui_backend_uri(path)
    if is_server(uri):
        typer.echo(f"this launch is recorded on the MLflow server {uri}: open it there")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    launch = LaunchDir(path)
    if not launch.is_remote:  # anything the UI itself stores stays beside the launch, not in the cwd
        command += ["--artifacts-destination", launch.artifacts_location()]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    typer.echo(f"MLflow UI for {path}: http://127.0.0.1:{port}{_runs_page(path)}  (Ctrl-C to stop)")
    code = _serve(command)
    if code not in (0, -signal.SIGINT, 128 + signal.SIGINT):
        fail(f"mlflow ui exited with status {code}", code=1)


def _check_port_free(port: int) -> None:
    """The UI would fail to bind after printing its URL; say so first, in one line."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            fail(f"port {port} on 127.0.0.1 is in use; choose another with --port")


def _serve(command: list[str]) -> int:
    # MLflow 3's server also starts job-runner processes (huey) that outlive it unless their whole process
    # group is stopped; a read-only look at a launch needs no jobs, so they are switched off.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the server as cleanly as Ctrl-C does
    try:
        return server.wait()
    except KeyboardInterrupt:
        return _stop_group(server)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_group(process: Any) -> int:
    """SIGINT to the process group (what a terminal's Ctrl-C does), then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()
