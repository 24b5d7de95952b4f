"""Typer options from the settings dataclasses, so each option is declared once, where it is consumed.

Typer reads a command's options from its signature. :func:`with_options` builds that signature from settings
dataclasses (``LaunchOptions``, ``RetrainOptions``, ``DataOptions``, :class:`OutputOptions`), whose fields are
declared with :func:`ostr_ray.core.fieldtypes.option` (default and help text; a field holding another settings
dataclass is expanded in place), and calls the command with the filled-in objects. The command hands them on
as they are: no flag is copied field by field between the command line, the settings and the spec builder.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from ostr_ray.core.fieldtypes import option
from ostr_ray.orchestration.spec import DataOptions

__all__ = ["DataOptions", "OutputOptions", "with_options"]


def with_options(*groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``fn(*group_objects, **own_params)``: each group's fields become options."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[len(groups) :]
        grouped = [param for group in groups for param in _parameters(group)]
        names = [p.name for p in [*own, *grouped]]
        if len(set(names)) < len(names):
            raise TypeError(f"{fn.__name__}: option names repeat: {sorted({n for n in names if names.count(n) > 1})}")

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            objects = [_fill(group, values) for group in groups]
            return fn(*objects, **values)

        command.__signature__ = inspect.Signature([*own, *grouped])  # type: ignore[attr-defined]
        return command

    return decorate


@functools.cache
def _fields(group: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """``group``'s fields with their resolved annotations (cached: every command build walks them)."""
    hints = typing.get_type_hints(group)
    return [(field, hints[field.name]) for field in dataclasses.fields(group)]


def _parameters(group: type) -> Iterator[inspect.Parameter]:
    """One keyword parameter per field, ``Annotated`` with its typer Option (or Argument) and help text."""
    for field, hint in _fields(group):
        if dataclasses.is_dataclass(hint):
            yield from _parameters(hint)
            continue
        if "help" not in field.metadata:
            raise TypeError(f"{group.__name__}.{field.name} is not declared with option()")
        meta = field.metadata
        kind = (
            typer.Argument(help=meta["help"]) if meta["argument"] else typer.Option(*meta["flags"], help=meta["help"])
        )
        yield inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=Annotated[hint, kind]
        )


def _fill(group: type, values: dict[str, Any]) -> Any:
    """``group`` built from (and taking its fields out of) the command's parsed ``values``."""
    filled = {}
    for field, hint in _fields(group):
        filled[field.name] = _fill(hint, values) if dataclasses.is_dataclass(hint) else values.pop(field.name)
    return group(**filled)


@dataclass
class OutputOptions:
    """How a command prints its result (the command line's own concern, so declared here)."""

    quiet: bool = option(False, "Plain log lines instead of live tables and progress bars.")
    json_out: bool = option(False, "Print the result as JSON.", "--json")
