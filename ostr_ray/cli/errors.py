"""How the command line fails: one plain line on stderr and exit status 2 for bad input (1 for a search that
diverged), never a traceback and never rich markup interpretation of the message (a path may hold ``[/]``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import typer
from rich.text import Text

from ostr_ray.console.format import make_console

err = make_console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_CODES = {"finished": 0, "partial": 3, "failed": 1}
"""A launch's or evaluation's outcome as its exit status; ``interrupted`` is 128 + the signal."""
DEBUG = {"on": False}
"""Set by ``ostr-ray --debug``: unexpected errors then show their traceback instead of one line."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's bad-input errors: each message is one line naming the bad value."""
    from ostr_ray.core.checkpoint import CheckpointError
    from ostr_ray.core.config import ConfigError
    from ostr_ray.core.criteria import CriterionError
    from ostr_ray.core.nb201_bench import NB201TableError
    from ostr_ray.data import DataError
    from ostr_ray.experiment import LaunchDirError, RecordError
    from ostr_ray.experiment.storage import StorageError
    from searchspaces import SearchSpaceError

    return (
        ConfigError,
        CriterionError,
        DataError,
        NB201TableError,
        CheckpointError,
        SearchSpaceError,
        LaunchDirError,
        RecordError,
        StorageError,
    )


def edge_errors() -> tuple[type[BaseException], ...]:
    """Bad input found at the edges (launch, cluster, tracking, retrain, evidence); imported only when raised."""
    import sys

    found = []
    for module, name in (
        ("ostr_ray.orchestration.spec", "LaunchError"),
        ("ostr_ray.orchestration.cluster", "ClusterError"),
        ("ostr_ray.tracking.store", "TrackingError"),
        ("ostr_ray.retrain.protocols", "RetrainError"),
        ("ostr_ray.evidence.loading", "EvidenceError"),
    ):
        if module in sys.modules:  # an error class can only have been raised if its module was imported
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def fail(message: str, code: int = 2) -> None:
    line = Text.assemble(("error:", "bold red"), " ", " ".join(str(message).split()))
    err.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn the project's bad-input errors into one red line and exit status 2; a diverged search into 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ostr_ray.core.search import SearchError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except SearchError as exc:
            fail(str(exc), code=1)
        except Exception as exc:
            if isinstance(exc, user_errors() + edge_errors()):
                fail(str(exc))
            if DEBUG["on"]:
                raise
            fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", code=1)

    return wrapper  # type: ignore[return-value]


def outcome_exit_code(outcome: str, interrupted_by: str | None = None) -> int:
    """The exit status an outcome stands for: 0 finished, 3 partial, 1 failed, 128 + the signal when interrupted
    (130 for Ctrl-C, 143 for SIGTERM); one rule for ``launch`` and ``evaluate``."""
    import signal

    if outcome == "interrupted":
        return 128 + int(getattr(signal, interrupted_by or "SIGINT", signal.SIGINT))
    return EXIT_CODES.get(outcome, 1)
