"""``ostr-ray search``: one seed in this process, with a checkpoint every epoch and a search record at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ostr_ray.cli.errors import cli_errors, err
from ostr_ray.cli.options import DataOptions, with_options


@cli_errors
@with_options(DataOptions)
def search(
    data: DataOptions,
    preset: Annotated[str, typer.Option(help="Preset name (see `ostr-ray presets`) or a YAML path.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    criterion: Annotated[str | None, typer.Option(help="Criterion Algorithm 1 watches.")] = None,
    patience: Annotated[int | None, typer.Option(help="Algorithm 1: stop when stable this many epochs.")] = None,
    tie_se: Annotated[float | None, typer.Option(help="Ignore flips between ops within k SEs.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    out: Annotated[Path | None, typer.Option(help="Output dir (checkpoints, report.json).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the search in this output dir.")] = None,
    quiet: Annotated[bool, typer.Option(help="Plain per-epoch lines, no progress bar.")] = False,
) -> None:
    """Run one seed's search in this process, with checkpoints every epoch."""
    from ostr_ray.core.checkpoint import read_checkpoint

    overrides = data.overrides(
        seed=seed, criterion=criterion, patience=patience, tie_se=tie_se, threads=threads, device=device
    )
    saved = read_checkpoint(resume) if resume is not None else None  # read once: config and start epoch
    config, out = _config_and_out(preset, seed, overrides, saved, out or resume)
    _preflight(config, out)
    result = _run(config, out, saved, quiet)
    _print_result(out, config, result)


def _config_and_out(preset: str, seed: int, overrides: dict[str, Any], saved: Any, out: Path | None) -> tuple:
    from ostr_ray.core.config import build_config, config_from_dict
    from ostr_ray.experiment.layout import DEFAULT_STORAGE

    if saved is not None:
        return config_from_dict({**saved["config"], **{k: v for k, v in overrides.items() if k != "seed"}}), out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default_out = Path(DEFAULT_STORAGE) / f"search-{Path(preset).stem}-seed{seed}-{stamp}"
    return build_config(preset, overrides), out or default_out


def _preflight(config: Any, out: Path) -> None:
    """What would otherwise fail after data loading or an epoch of training: the output folder, the device,
    the NB201 table, and whether one step fits the device's memory."""
    import torch

    from ostr_ray.core.config import ConfigError
    from ostr_ray.core.memory import check_search_memory
    from ostr_ray.core.search_data import check_searched_images
    from ostr_ray.orchestration.preflight import check_tables, check_writable

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    check_writable(str(out), "--out")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {config.device}: this machine has no CUDA GPU (torch sees none)")
    check_tables({"search": config.to_dict()})
    check_search_memory(config)
    check_searched_images(config)


def _run(config: Any, out: Path, saved: Any, quiet: bool) -> Any:
    from ostr_ray.console.progress import RichSearchProgress
    from ostr_ray.core.search import Searcher

    start = saved["epoch"] if saved is not None else 0
    progress = RichSearchProgress(config.epochs, config.criterion, start_epoch=start, quiet=quiet)
    try:
        return Searcher.open(config, out, callbacks=[progress], resume=saved is not None, state=saved).run()
    finally:
        progress.close()


def _print_result(out: Path, config: Any, result: Any) -> None:
    from rich.text import Text

    from ostr_ray.experiment import SearchDir, SearchRecord

    path = SearchDir(out).write_record(SearchRecord(config.to_dict(), result))
    err.print(Text.assemble(("stopped:", "bold"), f" {result.stop_reason}"))
    for crit, genotype in result.final_genotypes.items():
        err.print(f"  {crit:>10}: {genotype}", highlight=False, markup=False)
    err.print(f"report: {path}", highlight=False, markup=False)
