"""``ostr-ray launch`` (seeds x variants on Ray Tune, or ``--resume``) and ``ostr-ray status``."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any

import typer

from ostr_ray.cli.errors import cli_errors, err, outcome_exit_code
from ostr_ray.cli.options import OutputOptions, with_options
from ostr_ray.console.format import make_console
from ostr_ray.orchestration.spec import LaunchOptions, build_spec


@cli_errors
@with_options(LaunchOptions, OutputOptions)
def launch(
    options: LaunchOptions,
    output: OutputOptions,
    resume: Annotated[str | None, typer.Option(help="Continue the interrupted launch at this path.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start over in an existing launch directory (deletes it).")] = False,
) -> None:
    """Search several seeds (and variants) side by side on Ray Tune, with consensus and early stop.

    Exit status: 0 every trial finished, 3 some trials failed, 1 all failed, 2 bad input (before Ray starts),
    130 interrupted by Ctrl-C (143 by SIGTERM): continue with --resume."""
    from ostr_ray.console.live import LaunchView
    from ostr_ray.experiment import LaunchDir
    from ostr_ray.orchestration import preflight
    from ostr_ray.orchestration.run import resume_launch, run_launch

    address = options.cluster.address
    if resume:
        preflight.check_writable(resume, "--resume")  # remote storage: endpoint, credentials, bucket, in one line
        path = LaunchDir(resume).path
        if (ended := _finished_report(path)) is not None:  # nothing to continue: no Ray, no Tune restore
            err.print(
                f"launch {path} already finished; nothing to resume", highlight=False, markup=False, soft_wrap=True
            )
            print_report(ended, as_json=output.json_out)
            raise typer.Exit(0)
        view = LaunchView(LaunchDir(resume).read_spec().criterion, quiet=output.quiet)
        start = partial(resume_launch, resume, listeners=[view], view=view, address=address)
    else:
        spec = build_spec(options)
        preflight.preflight_launch(spec, local=address is None, overwrite=overwrite)
        path = spec.experiment_path
        view = LaunchView(spec.criterion, quiet=output.quiet)
        start = partial(run_launch, spec, listeners=[view], view=view, address=address)
    report = _run(start, path, view)
    print_report(report, as_json=output.json_out)
    _print_mlflow_hint(report)
    raise typer.Exit(exit_code(report))


def _finished_report(path: str) -> Any:
    """The report of a launch whose every trial finished (None otherwise: interrupted, or failed trials to retry)."""
    from ostr_ray.experiment import LaunchDir, LaunchDirError

    try:
        report = LaunchDir(path).read_report(required=False)
    except LaunchDirError:
        return None
    return report if report is not None and report.outcome == "finished" else None


def _run(start: Any, path: str, view: Any) -> Any:
    """Run the launch; a second Ctrl-C (which stops at once) still ends with its interrupted report."""
    from ostr_ray.experiment import LaunchDir

    try:
        return start()
    except KeyboardInterrupt:
        view.close()
        report = LaunchDir(path).read_report(required=False)
        if report is None:
            raise typer.Exit(130) from None
        return report


def exit_code(report: Any) -> int:
    """The exit status a launch's outcome stands for (see ``ostr-ray launch --help``)."""
    return outcome_exit_code(report.outcome, report.interrupted_by)


def _print_mlflow_hint(report: Any) -> None:
    """Last line of a launch: how to open its MLflow record (stderr, so --json output stays clean)."""
    from ostr_ray.tracking.store import is_server, ui_command

    record = report.mlflow
    uri = record.tracking_uri or ""
    if is_server(uri):
        run = record.parent_run_id
        where = f"{uri.rstrip('/')}/#/experiments/{record.experiment_id}/runs/{run}" if run else uri
        err.print(f"MLflow: {where}", highlight=False, soft_wrap=True, markup=False)
    else:
        err.print(f"MLflow UI: {ui_command(report.experiment_path)}", highlight=False, soft_wrap=True, markup=False)


def print_report(report: Any, *, as_json: bool) -> None:
    """A launch report as the closing tables (or JSON on stdout)."""
    from ostr_ray.console.summary import report_table
    from ostr_ray.experiment.layout import REPORT

    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1))
        return
    out = make_console()
    out.print(report_table(report))
    for trial, why in report.failures.items():
        err.print(f"failed: {trial}: {why}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"{report.outcome}: {report.experiment_path}/{REPORT}", highlight=False, markup=False)


@cli_errors
def status(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory (or URI).")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a running, interrupted or finished launch from its coordinator snapshot (or its evaluation)."""
    from ostr_ray.console.summary import launch_summary_table
    from ostr_ray.orchestration.status import is_evaluation_path, launch_status

    if is_evaluation_path(path):
        from ostr_ray.cli.evaluate import show_evaluation_status

        return show_evaluation_status(path, json_out)
    found = launch_status(path)
    if json_out:
        typer.echo(json.dumps(found.to_json(), indent=1))
        return
    shown = found.report or found.summary
    out = make_console()
    out.print(
        launch_summary_table(
            shown,
            stop_reason=found.stop_reason,
            ground_truth=found.report.ground_truth if found.report else None,
            trial_hours=found.report.search_cost_trial_hours if found.report else None,
        )
    )
    out.print(f"state: {found.state}", highlight=False, markup=False)
    if found.report is not None:
        for trial, why in found.report.failures.items():
            out.print(f"failed: {trial}: {why}", highlight=False, markup=False)
    if found.evaluation is not None:
        line = f"evaluation: {found.evaluation.state} ({found.evaluation.path})"
        out.print(line, highlight=False, markup=False, soft_wrap=True)  # a path is not to be folded
