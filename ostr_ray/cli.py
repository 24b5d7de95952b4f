"""The ``ostr-ray`` command line (typer). Bad input exits non-zero with one line before any work starts."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-seed OStr-DARTS architecture search on Ray, recorded in MLflow.",
)
nb201_app = typer.Typer(no_args_is_help=True, help="NAS-Bench-201 ground truth.")
app.add_typer(nb201_app, name="nb201")
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors() -> tuple[type[BaseException], ...]:
    from ostr_ray.config import ConfigError
    from ostr_ray.criteria import CriterionError
    from ostr_ray.data import DataError
    from ostr_ray.nb201_bench import NB201TableError
    from ostr_ray.search import CheckpointError
    from searchspaces import SearchSpaceError

    return (ConfigError, CriterionError, DataError, NB201TableError, CheckpointError, SearchSpaceError)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn the project's bad-input errors into one red line and exit status 2; a diverged search into 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ostr_ray.search import SearchError

        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
            fail(str(exc))
        except SearchError as exc:
            fail(str(exc), code=1)

    return wrapper  # type: ignore[return-value]


def _overrides(sets: list[str] | None, **flags: Any) -> dict[str, Any]:
    from ostr_ray.config import parse_override

    values = dict(parse_override(s) for s in sets or [])
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any setting as key=value (YAML value).")]


@app.command()
@cli_errors
def search(
    preset: Annotated[
        str, typer.Option(help="Preset name (see `ostr-ray presets`) or a YAML path.")
    ] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    dataset: Annotated[
        str | None, typer.Option(help="cifar10, cifar100, imagefolder, digits, synthetic.")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Data root (class-folder tree for imagefolder).")
    ] = None,
    download: Annotated[bool, typer.Option(help="Download torchvision data sets when missing.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    criterion: Annotated[str | None, typer.Option(help="Criterion Algorithm 1 watches.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Algorithm 1: stop when stable this many epochs.")
    ] = None,
    tie_se: Annotated[float | None, typer.Option(help="Ignore flips between ops within k SEs.")] = None,
    nb201_table: Annotated[str | None, typer.Option(help="NB201 ground-truth table (CSV or NATS).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    out: Annotated[Path | None, typer.Option(help="Output dir (checkpoints, report.json).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the search in this output dir.")] = None,
    quiet: Annotated[bool, typer.Option(help="Plain per-epoch lines, no progress bar.")] = False,
    set_: SetOpt = None,
) -> None:
    """Run one seed's search in this process, with checkpoints every epoch."""
    from ostr_ray.config import build_config, config_from_dict
    from ostr_ray.console import RichSearchProgress
    from ostr_ray.search import Searcher, read_checkpoint, write_search_report

    overrides = _overrides(
        set_,
        seed=seed,
        dataset=dataset,
        data_dir=data_dir,
        download=download or None,
        epochs=epochs,
        criterion=criterion,
        patience=patience,
        tie_se=tie_se,
        nb201_table=nb201_table,
        threads=threads,
        device=device,
    )
    if resume is not None:
        saved = read_checkpoint(resume)["config"]
        config = config_from_dict({**saved, **{k: v for k, v in overrides.items() if k != "seed"}})
        out = resume
    else:
        config = build_config(preset, overrides)
        out = (
            out
            or Path("ostr_runs") / f"search-{Path(preset).stem}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    start = read_checkpoint(resume)["epoch"] if resume else 0
    progress = RichSearchProgress(config.epochs, config.criterion, start_epoch=start, quiet=quiet)
    try:
        if resume is not None:
            searcher = Searcher.resume(resume, config=config, out_dir=out, callbacks=[progress])
        else:
            searcher = Searcher(config, out_dir=out, callbacks=[progress])
        result = searcher.run()
    finally:
        progress.close()
    path = write_search_report(out, config, result)
    err.print(f"[bold]stopped:[/] {result.stop_reason}")
    for crit, genotype in result.final_genotypes.items():
        err.print(f"  {crit:>10}: {genotype}", highlight=False)
    err.print(f"report: {path}")


@app.command()
@cli_errors
def launch(
    preset: Annotated[str, typer.Option(help="Preset for every trial (see `ostr-ray presets`).")] = "demo",
    seeds: Annotated[str, typer.Option(help="A count (5 = seeds 0..4) or a list (3,7,11).")] = "5",
    spaces: Annotated[
        str | None, typer.Option(help="Variants: spaces (nb201,darts,pcdarts) or presets.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Join a running Ray cluster ('auto'); else start one.")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Experiment storage: a path or s3://... URI.")] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name (a folder under --storage).")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the interrupted launch at this path.")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial (also torch's threads).")] = 1.0,
    gpus_per_trial: Annotated[
        float, typer.Option(help="GPUs per trial; 0.25 packs four seeds per GPU.")
    ] = 0.0,
    max_failures: Annotated[
        int, typer.Option(help="Retries of a failed trial from its last checkpoint.")
    ] = 2,
    criterion: Annotated[str | None, typer.Option(help="Criterion the stability rules watch.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="C: epochs a genotype must hold (0 = run all).")
    ] = None,
    agreement: Annotated[
        float, typer.Option(help="Share of seeds that must agree to stop the launch.")
    ] = 0.8,
    seed_stop: Annotated[bool, typer.Option(help="Per-seed Algorithm 1.")] = True,
    experiment_stop: Annotated[bool, typer.Option(help="Stop all once the consensus held.")] = True,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the preset's data set.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Data root.")] = None,
    nb201_table: Annotated[str | None, typer.Option(help="NB201 ground truth for every epoch.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    quiet: Annotated[bool, typer.Option(help="Plain log lines instead of the live table.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final report as JSON.")] = False,
    set_: SetOpt = None,
) -> None:
    """Search several seeds (and variants) side by side on Ray Tune, with consensus and early stop."""
    from ostr_ray import launch as launcher
    from ostr_ray.live import LaunchView

    try:
        if resume:
            spec_json = launcher.load_launch_spec(resume)
            view = LaunchView(spec_json.criterion, quiet=quiet)
            report = launcher.resume_launch(resume, listeners=[view], view=view, address=address)
        else:
            overrides = _overrides(
                set_, epochs=epochs, dataset=dataset, data_dir=data_dir, nb201_table=nb201_table
            )
            spec = launcher.build_spec(
                preset=preset,
                spaces=spaces,
                seeds=seeds,
                storage=storage,
                name=name,
                overrides=overrides,
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
                max_failures=max_failures,
                criterion=criterion,
                patience=patience,
                agreement=agreement,
                seed_stop=seed_stop,
                experiment_stop=experiment_stop,
                tracking_uri=tracking_uri,
            )
            view = LaunchView(spec.criterion, quiet=quiet)
            report = launcher.run_launch(spec, listeners=[view], view=view, address=address)
    except launcher.LaunchError as exc:
        fail(str(exc))
    _print_launch_report(report, as_json=json_out)


def _print_launch_report(report: dict, *, as_json: bool) -> None:
    import json

    from ostr_ray.summary import launch_summary_table

    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    out = Console()
    out.print(launch_summary_table(report))
    out.print(f"report: {report['experiment_path']}/report.json", highlight=False)


@app.command()
@cli_errors
def report(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory (or URI).")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Reprint a finished launch's report from disk."""
    from ostr_ray import launch as launcher

    try:
        data = launcher.load_report(path)
    except launcher.LaunchError as exc:
        fail(str(exc))
    _print_launch_report(data, as_json=json_out)


@app.command()
@cli_errors
def status(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory (or URI).")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a running (or finished) launch from its coordinator snapshot."""
    from ostr_ray import launch as launcher

    try:
        data = launcher.load_snapshot(path)
    except launcher.LaunchError as exc:
        fail(str(exc))
    _print_launch_report({**data, "experiment_path": path, "stop_reason": "(running)"}, as_json=json_out)


@app.command()
def presets() -> None:
    """List the presets (paper settings kept as data in launch/presets)."""
    from ostr_ray.config import list_presets, load_preset

    for name in list_presets():
        typer.echo(f"{name:18} {load_preset(name).get('description', '')}")


@nb201_app.command("lookup")
@cli_errors
def nb201_lookup(
    arch: Annotated[str, typer.Argument(help="NB201 string, e.g. '|nor_conv_3x3~0|+|...|'.")],
    table: Annotated[str, typer.Option(help="CSV with an arch column, or a NATS-Bench file.")],
) -> None:
    """Ground-truth metrics of one NB201 cell."""
    import json

    from ostr_ray.nb201_bench import load_nb201_table

    bench = load_nb201_table(table)
    typer.echo(json.dumps({"arch": arch, "index": bench.index_of(arch), **bench.lookup(arch)}))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
