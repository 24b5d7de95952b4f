"""Ray's error messages to the driver, kept to what the user can act on.

Ray's driver prints every error the cluster publishes (``listen_error_messages``) to stdout, verbatim: a worker
node that dies prints "Raylet is terminated ..." followed by the last lines of its log (~70 lines of
``[state-dump]``), into the middle of the live view and of ``--json`` output. The launch already says what
happened in one line (``node 10.0.0.7 lost: demo seed 1 continues from epoch 2``, from Tune's retry), so:
a raylet's death is not printed again, and any other published error is one line on stderr.

Ray has no public switch for this thread (``log_to_driver`` covers worker logs only), so :func:`install` wraps
the module function it calls; where a Ray release renames it, nothing is wrapped and Ray prints as before.
"""

from __future__ import annotations

import sys
from typing import Any

NODE_DEATHS = ("Raylet is terminated.", "has been marked dead")
"""Ray's messages that a node died: the dying raylet's (with its log's tail; ray._private.process_watcher) and
the GCS's once the node missed its heartbeats. A launch says which of its seeds that cost, in one line."""


def one_line(message: str, limit: int = 240) -> str | None:
    """The line to print for a message Ray published (None: nothing, the launch says it better)."""
    text = message.strip()
    if not text or any(sign in text.split("\n", 1)[0] for sign in NODE_DEATHS):
        return None
    first = text.splitlines()[0].strip()
    return first if len(first) <= limit else first[: limit - 1] + "…"


def install() -> bool:
    """Route Ray's published errors through :func:`one_line` onto stderr; returns whether it could."""
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_ostr_ray", False):
        return original is not None

    def condensed(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":  # not an error message: Ray's own handling
            original(data, ignore_prefix)
            return
        for message in data.get("lines", []):
            line = one_line(message)
            if line:
                print(f"ray: {line}", file=sys.stderr, flush=True)

    condensed._ostr_ray = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = condensed
    return True
