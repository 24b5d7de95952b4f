"""The kinds of node a Ray cluster can have: its autoscaler's node types, or its nodes when it has none.

Ray 2.60's autoscaler publishes its node types only where KubeRay reports a cluster config to the GCS; a cluster
started by ``ray up`` keeps them in the ``--autoscaling-config`` file its autoscaler process was given. Both are
read here, so that :func:`~ostr_ray.orchestration.cluster.check_resources` can accept a GPU launch on a cluster
whose GPU workers start at zero, and refuse one that no node type can ever hold.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class NodeType:
    """A kind of node an autoscaling cluster may have (or one node of a fixed one): what one node of it
    offers (None: not declared, so anything may fit) and how many of it there can be (-1: no limit)."""

    name: str
    resources: dict[str, float] | None
    count: int

    def fits(self, request: dict[str, float]) -> bool:
        if self.count == 0:
            return False
        if self.resources is None:
            return True
        return all(self.resources.get(key, 0) >= need for key, need in request.items() if need > 0)

    def describe(self) -> str:
        offers = describe_resources(self.resources) if self.resources is not None else "resources not declared"
        limit = "" if self.count == 1 else ", no limit" if self.count < 0 else f", up to {self.count}"
        return f"{self.name} ({offers}{limit})"


def describe_resources(resources: dict[str, float]) -> str:
    """``1 CPU, 2 GPUs, 2.0 GB memory, 1 ostr_gpu_node``: Ray's resources as a person reads them (CPU and GPU
    first; Ray's internal ``node:*`` and object store entries left out)."""
    order = {"CPU": 0, "GPU": 1, "memory": 2}
    parts = []
    for key in sorted(resources, key=lambda k: (order.get(k, 3), k)):
        value = resources[key]
        if key.startswith("node:") or key == "object_store_memory" or not value:
            continue
        if key == "memory":
            parts.append(f"{value / 1e9:.1f} GB memory")
        else:
            parts.append(f"{value:g} {key}" + ("s" if key in ("CPU", "GPU") and value != 1 else ""))
    return ", ".join(parts) or "no resources"


def node_types() -> list[NodeType] | None:
    """The node types this cluster's autoscaler may start (the head's included), or None when there is no
    autoscaler to ask: the cluster config Ray's GCS holds when the autoscaler reported one (KubeRay does),
    else the ``--autoscaling-config`` file of this cluster's autoscaler process (on the head node, as a
    driver started by ``ray exec`` runs; ``ray up`` writes it to ``~/ray_bootstrap_config.yaml``)."""
    return _reported_node_types() or _configured_node_types()


def _reported_node_types() -> list[NodeType] | None:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # an older GCS without the call, a Ray Client driver: not an autoscaling answer
        return None
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(g.name, dict(g.resources), int(g.max_count)) for g in config.node_group_configs]


def _configured_node_types() -> list[NodeType] | None:
    path = autoscaling_config_path()
    if path is None:
        return None
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        logging.getLogger(__name__).warning("cannot read the autoscaling config %s: %s", path, exc)
        return None
    return config_node_types(config) if isinstance(config, dict) else None


def config_node_types(config: dict[str, Any]) -> list[NodeType] | None:
    """The node types of a cluster launcher config (``ray_cluster.yaml``'s shape): the head counts once,
    a worker type up to its ``max_workers`` (and the cluster's)."""
    types = config.get("available_node_types")
    if not isinstance(types, dict) or not types:
        return None
    cluster_max = int(config.get("max_workers", -1))
    found = []
    for name, node in types.items():
        declared = node.get("resources")
        resources = {k: float(v) for k, v in declared.items()} if isinstance(declared, dict) else None
        if name == config.get("head_node_type"):
            found.append(NodeType(name, resources, 1))
            continue
        most = int(node.get("max_workers", cluster_max))
        found.append(NodeType(name, resources, most if cluster_max < 0 else min(most, cluster_max)))
    return found


def autoscaling_config_path() -> str | None:
    """The ``--autoscaling-config`` of the autoscaler (Ray's ``monitor.py``) serving the GCS this driver joined,
    when that process runs on this machine and this user may read its command line."""
    import ray

    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:
        return None
    import psutil

    wanted = f"--gcs-address={gcs}"
    for process in psutil.process_iter(["cmdline"]):
        args = process.info.get("cmdline") or []
        if wanted in args and any(a.endswith("monitor.py") for a in args[:3]):
            for arg in args:
                if arg.startswith("--autoscaling-config="):
                    return os.path.expanduser(arg.split("=", 1)[1])
    return None
