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
    from ostr_ray.core.config import ConfigError
    from ostr_ray.core.criteria import CriterionError
    from ostr_ray.core.nb201_bench import NB201TableError
    from ostr_ray.core.search import CheckpointError
    from ostr_ray.data import DataError
    from searchspaces import SearchSpaceError

    return (ConfigError, CriterionError, DataError, NB201TableError, CheckpointError, SearchSpaceError)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn the project's bad-input errors into one red line and exit status 2; a diverged search into 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ostr_ray.core.search import SearchError

        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
            fail(str(exc))
        except SearchError as exc:
            fail(str(exc), code=1)

    return wrapper  # type: ignore[return-value]


def _overrides(sets: list[str] | None, **flags: Any) -> dict[str, Any]:
    from ostr_ray.core.config import parse_override

    values = dict(parse_override(s) for s in sets or [])
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any setting as key=value (YAML value).")]


@app.command()
@cli_errors
def search(
    preset: Annotated[str, typer.Option(help="Preset name (see `ostr-ray presets`) or a YAML path.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    dataset: Annotated[str | None, typer.Option(help="cifar10, cifar100, imagefolder, digits, synthetic.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Data root (class-folder tree for imagefolder).")] = None,
    download: Annotated[bool, typer.Option(help="Download torchvision data sets when missing.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    criterion: Annotated[str | None, typer.Option(help="Criterion Algorithm 1 watches.")] = None,
    patience: Annotated[int | None, typer.Option(help="Algorithm 1: stop when stable this many epochs.")] = None,
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
    from ostr_ray.console.progress import RichSearchProgress
    from ostr_ray.core.config import build_config, config_from_dict
    from ostr_ray.core.search import Searcher, read_checkpoint, write_search_report

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
    saved = read_checkpoint(resume) if resume is not None else None  # read once: config and start epoch
    if saved is not None:
        config = config_from_dict({**saved["config"], **{k: v for k, v in overrides.items() if k != "seed"}})
        out = resume
    else:
        config = build_config(preset, overrides)
        out = out or Path("ostr_runs") / f"search-{Path(preset).stem}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    start = saved["epoch"] if saved is not None else 0
    progress = RichSearchProgress(config.epochs, config.criterion, start_epoch=start, quiet=quiet)
    try:
        if resume is not None:
            searcher = Searcher.resume(resume, config=config, state=saved, out_dir=out, callbacks=[progress])
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
    spaces: Annotated[str | None, typer.Option(help="Variants: spaces (nb201,darts,pcdarts) or presets.")] = None,
    address: Annotated[str | None, typer.Option(help="Join a running Ray cluster ('auto'); else start one.")] = None,
    storage: Annotated[str | None, typer.Option(help="Experiment storage: a path or s3://... URI.")] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name (a folder under --storage).")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the interrupted launch at this path.")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial (also torch's threads).")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per trial; 0.25 packs four seeds per GPU.")] = 0.0,
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial from its last checkpoint.")] = 2,
    criterion: Annotated[str | None, typer.Option(help="Criterion the stability rules watch.")] = None,
    patience: Annotated[int | None, typer.Option(help="C: epochs a genotype must hold (0 = run all).")] = None,
    agreement: Annotated[float, typer.Option(help="Share of seeds that must agree to stop the launch.")] = 0.8,
    seed_stop: Annotated[bool, typer.Option(help="Per-seed Algorithm 1.")] = True,
    experiment_stop: Annotated[bool, typer.Option(help="Stop all once the consensus held.")] = True,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the preset's data set.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Data root.")] = None,
    download: Annotated[bool, typer.Option(help="Download torchvision data sets when missing.")] = False,
    nb201_table: Annotated[str | None, typer.Option(help="NB201 ground truth for every epoch.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    quiet: Annotated[bool, typer.Option(help="Plain log lines instead of the live table.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final report as JSON.")] = False,
    set_: SetOpt = None,
) -> None:
    """Search several seeds (and variants) side by side on Ray Tune, with consensus and early stop."""
    from ostr_ray.console.live import LaunchView
    from ostr_ray.orchestration import launch as launcher
    from ostr_ray.tracking.recorder import TrackingError

    try:
        if resume:
            spec_json = launcher.load_launch_spec(resume)
            view = LaunchView(spec_json.criterion, quiet=quiet)
            report = launcher.resume_launch(resume, listeners=[view], view=view, address=address)
        else:
            overrides = _overrides(
                set_,
                epochs=epochs,
                dataset=dataset,
                data_dir=data_dir,
                nb201_table=nb201_table,
                download=download or None,
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
    except (launcher.LaunchError, TrackingError) as exc:
        fail(str(exc))
    _print_launch_report(report, as_json=json_out)
    _print_mlflow_hint(report)


def _print_mlflow_hint(report: dict) -> None:
    """Last line of a launch: how to open its MLflow record (stderr, so --json output stays clean)."""
    from ostr_ray.tracking.recorder import ui_command

    record = report.get("mlflow") or {}
    uri = record.get("tracking_uri") or ""
    if uri.startswith(("http://", "https://")):
        run = record.get("parent_run_id")
        where = f"{uri.rstrip('/')}/#/experiments/{record.get('experiment_id')}/runs/{run}" if run else uri
        err.print(f"MLflow: {where}", highlight=False, soft_wrap=True)
    else:
        err.print(f"MLflow UI: {ui_command(report['experiment_path'])}", highlight=False, soft_wrap=True)


def _print_launch_report(report: dict, *, as_json: bool) -> None:
    import json

    from ostr_ray.console.summary import launch_summary_table

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
    import json

    from ostr_ray import evidence
    from ostr_ray.console.summary import launch_summary_table

    fmt = "json" if json_out else format_.lower()
    if fmt not in ("rich", "markdown", "json"):
        fail(f"--format {format_!r}: choose rich, markdown or json")
    try:
        experiment = evidence.load_experiment(path)  # no Ray import: reading a report stays fast
        data = experiment.report
        found = evidence.build_evidence(experiment, nb201_table=nb201_table, metric=metric)
    except evidence.EvidenceError as exc:
        fail(str(exc))
    files: list[str] = []
    if write:
        try:
            files = evidence.write_outputs(found, report=data)
        except OSError as exc:
            err.print(f"[yellow]could not write the evidence files:[/] {exc}", highlight=False)
    logged = evidence.log_to_mlflow(found["experiment_path"], files) if files else None
    if fmt == "json":
        typer.echo(json.dumps(evidence.to_json(found, report=data), indent=1))
    elif fmt == "markdown":
        typer.echo(evidence.render_markdown(found), nl=False)
    else:
        out = Console()
        out.print(launch_summary_table(data))
        out.print(evidence.render_rich(found))
    if fmt != "json":
        for file in files:
            err.print(f"wrote {file}", highlight=False)
        if logged:
            err.print(logged, highlight=False)


@app.command()
@cli_errors
def status(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory (or URI).")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a running, interrupted or finished launch from its coordinator snapshot."""
    from ostr_ray.orchestration import launch as launcher

    try:
        data = launcher.launch_status(path)
    except launcher.LaunchError as exc:
        fail(str(exc))
    _print_launch_report({**data, "experiment_path": path}, as_json=json_out)


@app.command()
def presets() -> None:
    """List the presets (paper settings kept as data in launch/presets)."""
    from ostr_ray.core.config import list_presets, load_preset

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

    from ostr_ray.core.nb201_bench import load_nb201_table

    bench = load_nb201_table(table)
    typer.echo(json.dumps({"arch": arch, "index": bench.index_of(arch), **bench.lookup(arch)}))


@app.command()
@cli_errors
def retrain(
    genotype: Annotated[
        str | None,
        typer.Argument(
            help="Genotype string/JSON, a JSON file, a launch or search dir, or an MLflow run id (not with --resume)."
        ),
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="cifar10, cifar100, imagenet (streamed tree), imagefolder, digits, synthetic.")
    ] = "cifar10",
    data_dir: Annotated[str | None, typer.Option(help="Data root; class-folder tree: train/ and test|val/.")] = None,
    workers: Annotated[int | None, typer.Option(help="DDP workers (Ray Train). [default: 1]")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per worker. [default: 1]")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per worker, 0 or 1. [default: 0]")] = None,
    protocol: Annotated[
        str | None, typer.Option(help="darts-cifar, darts-imagenet, nb201 or a YAML; default from the space.")
    ] = None,
    augment: Annotated[str | None, typer.Option(help="'randaugment' adds RandAugment and doubles the epochs.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the protocol's epochs.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the network's size and settings; train nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    allow_large: Annotated[bool, typer.Option(help="Lift the protocol's mobile-setting size limit.")] = False,
    address: Annotated[str | None, typer.Option(help="Join a running Ray cluster ('auto'); else start one.")] = None,
    storage: Annotated[str | None, typer.Option(help="Where run dirs (checkpoints) go. [default: ostr_runs]")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (a folder under --storage).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    criterion: Annotated[str | None, typer.Option(help="Which criterion's genotype to take from a search.")] = None,
    seed: Annotated[int | None, typer.Option(help="Take this search seed's genotype instead of the consensus.")] = None,
    variant: Annotated[str | None, typer.Option(help="Launch variant, when the launch has several.")] = None,
    max_failures: Annotated[int, typer.Option(help="Worker-group restarts from the last checkpoint.")] = 2,
    resume: Annotated[str | None, typer.Option(help="Continue the retrain in this run dir.")] = None,
    download: Annotated[bool, typer.Option(help="Download torchvision data sets when missing.")] = False,
    set_: SetOpt = None,
) -> None:
    """Train a found architecture from scratch (DDP on Ray Train), logged to MLflow next to its search."""
    import json

    from ray.train import TrainingFailedError

    from ostr_ray import retrain as rt

    out = Console()

    def show_size(spec: Any) -> None:
        if not json_out:
            _print_retrain_size(out, spec.summary())

    try:
        if resume:
            if genotype:
                fail("give either GENOTYPE or --resume, not both")
            result = rt.resume_retrain(
                resume,
                address=address,
                epochs=epochs,
                workers=workers,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
                tracking_uri=tracking_uri,
                on_start=show_size,
            )
        else:
            if not genotype:
                fail("missing GENOTYPE (or --resume RUN_DIR)")
            spec = rt.prepare_retrain(
                genotype,
                dataset=dataset,
                data_dir=data_dir,
                protocol=protocol,
                augment=augment,
                epochs=epochs,
                overrides={**rt.parse_set(set_), **({"download": True} if download else {})},
                workers=workers or 1,
                cpus_per_worker=cpus_per_worker or 1.0,
                gpus_per_worker=gpus_per_worker or 0.0,
                max_failures=max_failures,
                allow_large=allow_large,
                criterion=criterion,
                seed=seed,
                variant=variant,
                storage=storage,
                name=name,
                tracking_uri=tracking_uri,
                dry_run=dry_run,
            )
            summary = spec.summary()
            if dry_run:
                if json_out:
                    typer.echo(json.dumps(summary, indent=1))
                else:
                    _print_retrain_size(out, summary)
                return
            result = rt.run_retrain(spec, address=address, on_start=show_size)
    except rt.RetrainError as exc:
        fail(str(exc))
    except TrainingFailedError as exc:
        fail(f"training failed after retries: {str(exc).splitlines()[0]}", code=1)
    if json_out:
        typer.echo(json.dumps(result, indent=1))
        return
    out.print(
        f"[bold]done:[/] {result['epochs_done']} epochs  test top-1 {result['test_top1']:.2f}%  "
        f"top-5 {result['test_top5']:.2f}%",
        highlight=False,
    )
    out.print(f"run dir: {result['run_dir']}\nMLflow run: {result['mlflow_run_id']} ({result['tracking_uri']})")


def _print_retrain_size(out: Console, summary: dict[str, Any]) -> None:
    res = summary["flops_resolution"]
    out.print(f"{summary['space']} genotype: {summary['genotype']}", highlight=False, soft_wrap=True)
    out.print(
        f"network: {summary['network']}  params {summary['params_m']:.3f}M (no aux head)  "
        f"{summary['mult_adds_m']:.1f}M multiply-adds at {res}x{res}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"protocol {summary['protocol']}: {summary['epochs']} epochs, batch {summary['batch_size']} "
        f"({summary['workers']} x {summary['per_worker_batch']}), lr {summary['lr']:g}, augment {summary['augment']}",
        highlight=False,
        soft_wrap=True,
    )


def _runs_page(path: str) -> str:
    """The launch's runs table (MLflow 3's UI otherwise opens on its GenAI overview), when the id is known."""
    import json

    try:
        experiment_id = json.loads((Path(path) / "mlflow_runs.json").read_text())["experiment_id"]
    except (OSError, ValueError, KeyError):
        return ""
    return f"/#/experiments/{experiment_id}/runs"


@app.command()
@cli_errors
def ui(
    path: Annotated[str, typer.Argument(help="A launch's experiment directory.")],
    port: Annotated[int, typer.Option(help="Port of the MLflow UI (bound to 127.0.0.1).")] = 5000,
) -> None:
    """Open a launch's MLflow record: runs `mlflow ui` on its SQLite store until Ctrl-C."""
    import os
    import signal
    import subprocess

    from ostr_ray.tracking import recorder as tracking

    try:
        uri = tracking.ui_backend_uri(path)
    except tracking.TrackingError as exc:
        fail(str(exc))
    if uri.startswith(("http://", "https://")):
        typer.echo(f"this launch is recorded on the MLflow server {uri}: open it there")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    if "://" not in path:  # anything the UI itself stores stays beside the launch, not in the cwd
        command += ["--artifacts-destination", (Path(path).resolve() / tracking.ARTIFACTS_DIR).as_uri()]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    typer.echo(f"MLflow UI for {path}: http://127.0.0.1:{port}{_runs_page(path)}  (Ctrl-C to stop)")
    # MLflow 3's server also starts job-runner processes (huey) that outlive it unless their whole process
    # group is stopped; a read-only look at a launch needs no jobs, so they are switched off.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the server as cleanly as Ctrl-C does
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = _stop_group(server)
    if code not in (0, -signal.SIGINT, 128 + signal.SIGINT):
        fail(f"mlflow ui exited with status {code}", code=1)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_group(process: Any) -> int:
    """SIGINT to the process group (what a terminal's Ctrl-C does), then SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
