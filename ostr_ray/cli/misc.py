"""Small commands: ``ostr-ray presets`` and ``ostr-ray nb201 lookup``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ostr_ray.cli.errors import cli_errors


def presets() -> None:
    """List the presets (paper settings kept as data in launch/presets)."""
    from ostr_ray.core.config import list_presets, load_preset

    for name in list_presets():
        typer.echo(f"{name:18} {load_preset(name).get('description', '')}")


@cli_errors
def nb201_lookup(
    arch: Annotated[str, typer.Argument(help="NB201 string, e.g. '|nor_conv_3x3~0|+|...|'.")],
    table: Annotated[str, typer.Option(help="CSV with an arch column, or a NATS-Bench file.")],
) -> None:
    """Ground-truth metrics of one NB201 cell."""
    from ostr_ray.core.nb201_bench import load_nb201_table

    bench = load_nb201_table(table)
    typer.echo(json.dumps({"arch": arch, "index": bench.index_of(arch), **bench.lookup(arch)}))
