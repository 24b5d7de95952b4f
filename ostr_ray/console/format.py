"""Genotypes and numbers as the terminal shows them (short op names from each space's registry entry), and the
console they are shown on."""

from __future__ import annotations

import os

from rich.console import Console

from searchspaces import SearchSpaceError, get_space, list_spaces

LOG_WIDTH = 100
"""Columns of output that goes to a file or a pipe (rich would assume 80): the tables are laid out for 100."""


def make_console(*, stderr: bool = False) -> Console:
    """A rich console; off a terminal, ``LOG_WIDTH`` wide unless ``COLUMNS`` says otherwise."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=LOG_WIDTH)
    return console


def compact(text: str, space: str | None = None) -> str:
    """``text`` with the space's short op names (every registered space's when ``space`` is unknown)."""
    names = [space] if space else list_spaces()
    for name in names:
        try:
            text = get_space(name).compact(text)
        except SearchSpaceError:
            continue
    return text


def short_genotype(text: str, limit: int = 60, space: str | None = None) -> str:
    """A compact genotype, elided in the middle past ``limit`` characters."""
    text = compact(text, space)
    return text if len(text) <= limit else text[: limit // 2 - 1] + "…" + text[-limit // 2 :]


def first_metric(truth: dict[str, float] | None) -> float | None:
    """The first ground-truth metric of a cell (the table's primary column), if any."""
    return next(iter(truth.values()), None) if truth else None
