"""``ostr-ray evaluate``: retrain a launch's cells from scratch over several seeds, as one Ray Tune experiment."""

from __future__ import annotations

import json
from typing import Any

import typer

from ostr_ray.cli.errors import cli_errors, err, outcome_exit_code
from ostr_ray.cli.options import OutputOptions, with_options
from ostr_ray.console.format import make_console
from ostr_ray.evaluate.spec import EvaluateOptions


@cli_errors
@with_options(EvaluateOptions, OutputOptions)
def evaluate(options: EvaluateOptions, output: OutputOptions) -> None:
    """Retrain a launch's cells (consensus, each criterion's, each seed's, random baselines) over R seeds.

    Every (cell, seed) is one Ray Tune trial of one experiment under <launch>/evaluation, recorded in MLflow
    under the launch's run; `ostr-ray report <launch>` then shows the comparison. Exit status: 0 every run
    finished, 3 some failed, 1 all failed, 2 bad input (before Ray starts), 130 interrupted (--resume continues).
    """
    from ostr_ray.evaluate.driver import resume_evaluation, run_evaluation
    from ostr_ray.evaluate.spec import check_options, prepare_evaluation, resolve_launch

    def echo(line: str) -> None:
        if not output.json_out:
            err.print(line, highlight=False, markup=False)

    def show(spec: Any) -> None:
        if not output.json_out:
            _print_plan(spec)

    if options.resume:
        check_options(options)
        launch = resolve_launch(options.launch, options.placement.tracking_uri)
        address = options.placement.address
        report = _run(lambda: resume_evaluation(launch.path, address=address, on_start=show, echo=echo))
    else:
        spec = prepare_evaluation(options)
        if options.dry_run:
            if output.json_out:
                typer.echo(json.dumps({**spec.to_json(), "runs": spec.runs()}, indent=1))
            else:
                _print_plan(spec)
            return
        report = _run(lambda: run_evaluation(spec, address=options.placement.address, on_start=show, echo=echo))
    _print_report(report, output.json_out)
    raise typer.Exit(exit_code(report))


def _run(start: Any) -> dict[str, Any]:
    try:
        return start()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def exit_code(report: dict[str, Any]) -> int:
    """The launch's exit statuses: 0 finished, 3 partial, 1 failed, 128 + the signal when interrupted."""
    return outcome_exit_code(report["outcome"], report.get("interrupted_by"))


def _print_plan(spec: Any) -> None:
    out = make_console(stderr=True)
    config = spec.config
    out.print(
        f"{len(spec.cells)} cells x {len(spec.seeds)} seeds = {len(spec.runs())} runs of {config['protocol']} "
        f"({config['epochs']} epochs, {spec.dataset}), {spec.cpus_per_run:g} CPU / {spec.gpus_per_run:g} GPU each",
        highlight=False,
        markup=False,
    )
    if spec.scheduler:
        asha = spec.scheduler
        out.print(
            f"  ASHA screening on {asha['metric']}: rungs from epoch {asha['grace_period']}, reduction factor "
            f"{asha['reduction_factor']:g}; runs stopped early are reported, not counted in the means",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for cell in spec.cells:
        size = cell["size"]
        credits = ", ".join(c["label"] for c in cell["credits"])
        out.print(
            f"  {cell['id']}: {cell['genotype']}  [{credits}]  {size['params_m']:.3f}M params  "
            f"{size['mult_adds_m']:.1f}M mult-adds",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for note in spec.notes:
        out.print(f"  note: {note}", highlight=False, markup=False)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=1, default=str))
        return
    from ostr_ray.evidence.evaluation import evaluation_tables
    from ostr_ray.evidence.render import TableSpec, markdown_table

    for table in evaluation_tables(report):
        typer.echo(markdown_table(TableSpec(*table)) + "\n")
    typer.echo(f"{report['outcome']}: {report['stop_reason']}")


def show_evaluation_status(path: str, json_out: bool) -> None:
    """``ostr-ray status <launch>/evaluation``: the evaluation's state (as a launch's) and every run's progress."""
    from pathlib import Path

    from ostr_ray.evaluate.selection import EvaluateError
    from ostr_ray.orchestration.status import evaluation_status

    found = evaluation_status(str(Path(path).expanduser().resolve().parent))
    if found is None:
        raise EvaluateError(f"no evaluation at {path}")
    if json_out:
        typer.echo(json.dumps(found.to_json(), indent=1, default=str))
        return
    out = make_console()
    for name, run in found.runs.items():
        top1 = "" if run.get("test_top1") is None else f"  top-1 {run['test_top1']:.2f}%"
        stopped = f" at epoch {run['stopped_at_epoch']}" if run.get("stopped_at_epoch") else ""
        line = f"{name}: {run['status']}{stopped}  {run.get('epochs_done', 0)}/{found.epochs} epochs{top1}"
        out.print(line, highlight=False, markup=False)
    counts = ", ".join(f"{n} {status}" for status, n in found.counts().items())
    out.print(f"state: {found.state} ({counts}): {found.stop_reason}", highlight=False, markup=False, soft_wrap=True)
