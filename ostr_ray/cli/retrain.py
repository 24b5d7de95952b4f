"""``ostr-ray retrain``: train a found architecture from scratch (DDP on Ray Train), recorded in MLflow."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from ostr_ray.cli.errors import cli_errors, fail
from ostr_ray.cli.options import OutputOptions, with_options
from ostr_ray.console.format import make_console
from ostr_ray.retrain.options import RetrainOptions


@cli_errors
@with_options(RetrainOptions, OutputOptions)
def retrain(options: RetrainOptions, output: OutputOptions) -> None:
    """Train a found architecture from scratch (DDP on Ray Train), logged to MLflow next to its search."""
    from ray.train import TrainingFailedError

    from ostr_ray import retrain as rt

    out = make_console()

    def show_size(spec: Any) -> None:
        if not output.json_out:
            _print_size(out, spec.summary())

    place = options.placement
    try:
        if place.resume:
            if options.genotype:
                fail("give either GENOTYPE or --resume, not both")
            result = _resume(rt, options, show_size)
        else:
            spec = rt.prepare_retrain(options)
            if options.dry_run:
                _print_dry_run(out, spec.summary(), output.json_out)
                return
            result = rt.run_retrain(spec, address=place.address, on_start=show_size)
    except TrainingFailedError as exc:
        fail(f"training failed after retries: {str(exc).splitlines()[0]}", code=1)
    _print_result(out, result, output.json_out)


def _resume(rt: Any, options: RetrainOptions, on_start: Any) -> dict[str, Any]:
    """Continue a run: the flags given change it (more epochs, other resources), those not given keep its own."""
    place = options.placement
    return rt.resume_retrain(
        place.resume,
        address=place.address,
        epochs=options.recipe.epochs,
        workers=place.workers,
        cpus_per_worker=place.cpus_per_worker,
        gpus_per_worker=place.gpus_per_worker,
        tracking_uri=place.tracking_uri,
        on_start=on_start,
    )


def _print_dry_run(out: Console, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        _print_size(out, summary)


def _print_result(out: Console, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    out.print(
        f"done: {result['epochs_done']} epochs  test top-1 {result['test_top1']:.2f}%  "
        f"top-5 {result['test_top5']:.2f}%",
        highlight=False,
        markup=False,
    )
    out.print(
        f"run dir: {result['run_dir']}\nMLflow run: {result['mlflow_run_id']} ({result['tracking_uri']})",
        markup=False,
    )


def _print_size(out: Console, summary: dict[str, Any]) -> None:
    res = summary["flops_resolution"]
    lines = (
        f"{summary['space']} genotype: {summary['genotype']}",
        f"network: {summary['network']}  params {summary['params_m']:.3f}M (no aux head)  "
        f"{summary['mult_adds_m']:.1f}M multiply-adds at {res}x{res}",
        f"protocol {summary['protocol']}: {summary['epochs']} epochs, batch {summary['batch_size']} "
        f"({summary['workers']} x {summary['per_worker_batch']}), lr {summary['lr']:g}, augment {summary['augment']}",
    )
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True, markup=False)
