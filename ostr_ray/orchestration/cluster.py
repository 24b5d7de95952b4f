"""Joining or starting Ray, and checking the cluster can host the work: shared by launch and retrain.

``ray.init(address=...)`` keeps retrying an unreachable GCS for minutes; a plain TCP connect answers in seconds,
so a wrong ``--address`` fails fast with one line. Ray already initialised in this process without an address
(tests, notebooks) is reused and left running.
"""

from __future__ import annotations

import logging
import math
import os
import socket

from ostr_ray.orchestration import ray_messages
from ostr_ray.orchestration.node_types import NodeType, describe_resources, node_types


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
        ray_messages.install()  # and a lost node in one line, not the dead raylet's log on stdout
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
    least, and all of them at once where ``count`` says they must run together (DDP workers).

    An autoscaling cluster is judged by the nodes it can have (:func:`node_types`): a GPU launch on a cluster
    whose GPU workers start at zero is accepted, one that no node type can hold is refused. A fixed cluster
    (no autoscaler, or one whose node types cannot be read from here) is judged by its nodes now."""
    import ray

    alive = [NodeType("node", dict(n.get("Resources", {})), 1) for n in ray.nodes() if n.get("Alive")]
    types = node_types()
    if types is not None:
        return _check_possible(count, {"CPU": cpus, "GPU": gpus}, what, alive, types)
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
    if alive and not any(t.fits({"CPU": cpus, "GPU": gpus}) for t in alive):
        raise ClusterError(f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for one {what}")


def _check_possible(
    count: int, request: dict[str, float], what: str, alive: list[NodeType], types: list[NodeType]
) -> None:
    """Refuse what no node the cluster has or can start holds (one unit), or more than it can grow to (all
    units at once)."""
    if not any(t.fits(request) for t in [*alive, *types]):
        need = describe_resources(request)
        kinds = "; ".join(t.describe() for t in types)
        raise ClusterError(
            f"no node this autoscaling Ray cluster can have fits one {what} ({need}); node types: {kinds}"
        )
    units = f"{count} {what}" + ("s" if count != 1 else "")
    for key, each in request.items():
        most = max(_most(types, key), sum((t.resources or {}).get(key, 0) for t in alive))
        if count * each > most:
            raise ClusterError(
                f"{units} x {each:g} {key} need {count * each:g} {key}s; the Ray cluster can grow to {most:g}"
            )


def _most(types: list[NodeType], key: str) -> float:
    """The most of resource ``key`` the node types can add up to (infinite where one is undeclared or unbounded)."""
    total = 0.0
    for t in types:
        if t.resources is None or (t.count < 0 and t.resources.get(key, 0) > 0):
            return math.inf
        total += t.resources.get(key, 0) * t.count
    return total
