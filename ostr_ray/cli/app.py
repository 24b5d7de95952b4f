"""The ``ostr-ray`` program: every command registered on one typer app.

Each command lives in its own module and imports the layers it needs inside its body, so ``ostr-ray --help``
and the one-line input errors stay fast (no torch, Ray or MLflow import before they are needed).
"""

from __future__ import annotations

from typing import Annotated

import typer

from ostr_ray.cli.errors import DEBUG
from ostr_ray.cli.evaluate import evaluate
from ostr_ray.cli.launch import launch, status
from ostr_ray.cli.misc import nb201_lookup, presets
from ostr_ray.cli.report import report, ui
from ostr_ray.cli.retrain import retrain
from ostr_ray.cli.search import search

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-seed OStr-DARTS architecture search on Ray, recorded in MLflow.",
)
nb201_app = typer.Typer(no_args_is_help=True, help="NAS-Bench-201 ground truth.")
app.add_typer(nb201_app, name="nb201")


@app.callback()
def main(
    debug: Annotated[bool, typer.Option(help="Show the traceback of an unexpected error instead of one line.")] = False,
) -> None:
    """Multi-seed OStr-DARTS architecture search on Ray, recorded in MLflow."""
    DEBUG["on"] = debug


app.command()(search)
app.command()(launch)
app.command()(report)
app.command()(status)
app.command()(presets)
app.command()(retrain)
app.command()(evaluate)
app.command()(ui)
nb201_app.command("lookup")(nb201_lookup)
