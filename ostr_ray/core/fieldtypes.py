"""Settings from YAML and ``--set`` arrive as whatever YAML parsed (``epochs=abc`` is a string, ``1.5`` a float,
``.inf`` an infinity); they are checked against the dataclass's annotations here, before anything runs, so a
wrong type is one line naming the setting instead of a traceback an epoch later (or 2 epochs for ``1.5``).

:func:`option` declares a settings field that is also a command-line flag, with its help text as metadata."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

_NONE = type(None)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check(name: str, kind: Any, value: Any) -> Any:
    """``value`` as ``kind`` (integral floats become ints); raises ValueError naming the setting."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        options = [a for a in args if a is not _NONE]
        errors = []
        for option in options:
            try:
                return _check(name, option, value)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(options) == 1 else f"{name} must be one of {options}, got {_describe(value)}")
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {_describe(value)}")
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {_describe(value)}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {_describe(value)}")
        return value
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping ({{key: value}}), got {_describe(value)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {_describe(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{name} must have {len(args)} entries, got {len(value)}: {value!r}")
            return tuple(_check(f"{name}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return origin(_check(f"{name}[{i}]", item, v) for i, v in enumerate(value))
    return value


def checked_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked (and integral floats turned into ints) against ``cls``'s field annotations."""
    hints = typing.get_type_hints(cls)
    return {name: _check(name, hints[name], value) if name in hints else value for name, value in values.items()}


def option(default: Any = None, text: str = "", *flags: str, argument: bool = False) -> Any:
    """A settings field that is also a command-line option: its default, its ``--help`` text, its flag names
    (``flags``; default ``--field-name``) and whether it is the command's positional argument.

    Settings are declared once, as dataclasses in the layer that consumes them (typer-free); the CLI's
    ``with_options`` expands their fields into the command's options and hands back the filled dataclass."""
    return dataclasses.field(default=default, metadata={"help": text, "flags": flags, "argument": argument})
