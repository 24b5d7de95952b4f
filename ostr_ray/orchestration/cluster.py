"""Joining or starting Ray, and checking the cluster can host the work: shared by launch and retrain.

``ray.init(address=...)`` keeps retrying an unreachable GCS for minutes; a plain TCP connect answers in seconds,
so a wrong ``--address`` fails fast with one line. Ray already initialised in this process without an address
(tests, notebooks) is reused and left running.
"""

from __future__ import annotations

import logging
import os
import socket


class ClusterError(ValueError):
    """Ray cannot be reached, or the cluster cannot host one trial or worker; one line, before any work."""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot reach Ray at --address {address!r}: {exc}") from None


def connect(address: str | None, *, quiet_driver: bool = True) -> bool:
    """Join ``address`` (``auto`` or host:port) or start a local Ray; returns whether this call started it
    (and so should shut it down). ``quiet_driver`` keeps workers' logs out of the terminal, where the live
    view is the only output."""
    import ray

    if ray.is_initialized() and address is None:
        return False
    if ray.is_initialized():
        ray.shutdown()
    # Tune's own console reporter would interleave with the live table: the legacy reporter at verbose=0
    # is silent, so the rich view is the only output.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address and address != "auto":
        check_reachable(address)
    options = {"log_to_driver": not quiet_driver, "logging_level": "ERROR"}
    if quiet_driver:  # the launch says in one line why a trial failed; Tune's traceback stays in its error file
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot reach Ray at --address {address!r}: {str(exc).splitlines()[0]}") from None
    return True


def disconnect(owned: bool) -> None:
    if owned:
        import ray

        ray.shutdown()


def connect_for(
    address: str | None, count: int, cpus: float, gpus: float, what: str, *, quiet_driver: bool = True
) -> bool:
    """:func:`connect`, then :func:`check_resources`; Ray is shut down again (if this call started it) when the
    units do not fit. Returns whether this call started Ray. Launch, retrain and evaluate all join this way."""
    owned = connect(address, quiet_driver=quiet_driver)
    try:
        check_resources(count, cpus, gpus, what)
    except ClusterError:
        disconnect(owned)
        raise
    return owned


def check_resources(count: int, cpus: float, gpus: float, what: str) -> None:
    """``count`` units of ``what`` (trial, worker) at ``cpus``/``gpus`` each fit the cluster: one per node at
    least, and all of them at once where ``count`` says they must run together (DDP workers)."""
    import ray

    total = ray.cluster_resources()
    units = f"{count} {what}" + ("s" if count != 1 else "")
    if gpus > 0 and total.get("GPU", 0) == 0:
        raise ClusterError(f"--gpus-per-{what} {gpus:g} but the Ray cluster has no GPU")
    if count * gpus > total.get("GPU", 0):
        raise ClusterError(
            f"{units} x {gpus:g} GPU need {count * gpus:g} GPUs; the Ray cluster has {total.get('GPU', 0):g}"
        )
    if count * cpus > total.get("CPU", 0):
        raise ClusterError(
            f"{units} x {cpus:g} CPU need {count * cpus:g} CPUs; the Ray cluster has {total.get('CPU', 0):g}"
        )
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if nodes and not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        raise ClusterError(f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for one {what}")
