"""Offline validation of ``ray_cluster.yaml`` with Ray's own cluster-launcher code and schema.

``ray up`` (``ray.autoscaler._private.commands._bootstrap_config``) does, in order:

1. ``prepare_config``: ``fillout_defaults`` (merges ``ray/autoscaler/aws/defaults.yaml``),
   ``merge_setup_commands``, ``validate_docker_config``, ``fill_node_type_min_max_workers``;
2. the AWS provider's ``fillout_available_node_types_resources`` (EC2 DescribeInstanceTypes);
3. ``validate_config``: ``jsonschema`` against ``ray/autoscaler/ray-schema.json`` plus Ray's cross-field
   checks (head type exists, sum of min_workers <= max_workers, defaults were filled in);
4. the provider's ``bootstrap_config`` (IAM role, key pair, subnets, security groups).

Steps 2 and 4 need AWS credentials and the network; 1 and 3 are pure Python and never import boto3. These
tests run 1 + 3 -- the same checks ``ray up`` makes on the filled config -- with sockets disabled. Step 2
only adds autodetected integer counts (CPU, GPU, memory, accelerator_type:*) under the resources we set,
which keep precedence, so skipping it cannot turn a valid config invalid.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"
ENV_FILE = "~/.ostr_ray_env"
TOKEN_PATH = "~/.ray/auth_token"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Validation must stay offline: any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("cluster-config validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def validate_offline(raw: dict) -> dict:
    """Ray's default filling, then Ray's schema + semantic validation. Returns the filled config."""
    filled = prepare_config(copy.deepcopy(raw))
    validate_config(filled)
    return filled


def load(text: str | None = None) -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text() if text is None else text)


@pytest.fixture(scope="module")
def raw() -> dict:
    return load()


@pytest.fixture(scope="module")
def filled(raw) -> dict:
    return validate_offline(raw)


def exports(config: dict) -> dict[str, str]:
    """``export NAME=VALUE`` lines the setup commands write into the env file."""
    text = "\n".join(config["setup_commands"] + config.get("head_setup_commands", []))
    return dict(re.findall(r"export (\w+)=([^'\s]+)", text))


def test_real_file_passes_ray_validation(raw, filled):
    assert raw["cluster_name"] == "ostr-ray"
    provider = filled["provider"]
    assert (provider["type"], provider["region"]) == ("aws", "us-west-2")
    assert provider["cache_stopped_nodes"] is True
    assert filled["auth"]["ssh_user"] == "ubuntu"
    assert filled["head_node_type"] in filled["available_node_types"]
    # Our own node types replace the defaults' (m5.large) ones rather than merging with them.
    assert set(filled["available_node_types"]) == set(raw["available_node_types"])


MUTATIONS = {
    # the brief's example: a typo'd top-level key (the schema forbids unknown keys)
    "max_worker typo": (r"(?m)^max_workers: 8$", "max_worker: 8"),
    "min_workers wrong type": (r"(?m)^(\s+)min_workers: 0$", r'\1min_workers: "zero"'),
    "fractional custom resource": (r'(?m)^(\s+resources: \{.*"ostr_gpu_node": )1\}', r"\g<1>0.5}"),
    "negative GPU count": (r'(?m)^(\s+resources: \{.*"GPU": )1,', r"\g<1>-1,"),
    "typo inside a node type": (r'(?m)^(\s+)resources: \{"CPU": 8', r'\1resource: {"CPU": 8'),
    "unknown head node type": (r"(?m)^head_node_type: ray\.head\.cpu$", "head_node_type: ray.head.gpu"),
    "non-boolean cache_stopped_nodes": (r"cache_stopped_nodes: true", "cache_stopped_nodes: sometimes"),
    "min_workers above global max": (r"(?m)^(\s+)min_workers: 0$", r"\1min_workers: 9"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_errors_are_rejected(name, tmp_path):
    pattern, replacement = MUTATIONS[name]
    original = CLUSTER_YAML.read_text()
    broken, count = re.subn(pattern, replacement, original)
    assert count == 1, f"mutation {name!r} no longer matches ray_cluster.yaml exactly once"
    copy_path = tmp_path / "ray_cluster.yaml"
    copy_path.write_text(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_offline(load(copy_path.read_text()))


def test_resources_are_integers(filled):
    for name, node_type in filled["available_node_types"].items():
        resources = node_type["resources"]
        for key, value in resources.items():
            assert type(value) is int and value >= 0, f"{name}.resources[{key!r}] = {value!r}"
    worker = filled["available_node_types"]["ray.worker.gpu"]["resources"]
    assert worker["GPU"] == 1 and worker["CPU"] == 8
    custom = {k: v for k, v in worker.items() if k not in {"CPU", "GPU", "memory", "object_store_memory"}}
    assert custom, "the GPU worker type should carry an integer custom resource (e.g. ostr_gpu_node)"


def test_gpu_workers_autoscale_from_zero(filled):
    worker = filled["available_node_types"]["ray.worker.gpu"]
    assert (worker["min_workers"], worker["max_workers"]) == (0, 8)
    assert filled["max_workers"] == 8
    head = filled["available_node_types"][filled["head_node_type"]]
    assert head["max_workers"] == 0 and head["resources"].get("GPU", 0) == 0


def _head_commands(filled: dict) -> list[str]:
    return filled["head_setup_commands"] + filled["head_start_ray_commands"]


def test_dashboard_bound_to_localhost(filled):
    starts = [c for c in filled["head_start_ray_commands"] if "ray start --head" in c]
    assert len(starts) == 1
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1(\s|$)", starts[0]), starts[0]
    for command in _head_commands(filled):
        for host in re.findall(r"--dashboard-host[= ](\S+)", command):
            assert host == "127.0.0.1", command


def test_mlflow_server_local_sqlite_and_s3(filled):
    servers = [c for c in _head_commands(filled) if "mlflow server" in c]
    assert len(servers) == 1, "exactly one command should start the MLflow server on the head"
    server = servers[0]
    assert "nohup" in server
    assert re.findall(r"--host[= ](\S+)", server) == ["127.0.0.1"], server
    assert re.search(r"--backend-store-uri\s+\"?sqlite:///", server), server
    assert "--serve-artifacts" in server
    assert re.search(r"--artifacts-destination\s+\"?s3://", server), server
    assert exports(filled)["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert "mlflow server" not in " ".join(filled["worker_start_ray_commands"])


def test_nothing_binds_all_interfaces(raw, filled):
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    # Ray's defaults.yaml starts the head with --dashboard-host=0.0.0.0: make sure none of it leaks in.
    assert "0.0.0.0" not in json.dumps(filled)
    assert "IpPermissions" not in json.dumps(filled["provider"]), "no extra security-group ingress rules"


def test_ostr_ray_install_is_pinned(filled):
    specs = re.findall(r"ostr-ray\s*@\s*(git\+[^\s\"']+)", " ".join(filled["setup_commands"]))
    assert specs, "setup_commands must install ostr-ray from a pinned git ref"
    for url in specs:
        ref = url.rsplit("@", 1)
        assert len(ref) == 2 and re.search(r"@v\d|@[0-9a-f]{7,}", "@" + ref[1]), f"unpinned: {url}"
    # The cluster's Ray must match the launcher's (the Ray running these tests).
    pins = re.findall(r"ray\[[\w,]+\]==([\w.]+)", " ".join(filled["setup_commands"]))
    assert pins == [ray.__version__]


def test_token_auth_on_every_node(filled):
    assert exports(filled)["RAY_AUTH_MODE"] == "token"
    assert TOKEN_PATH in filled["file_mounts"], "the Ray auth token must be copied to every node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in filled[key] if "ray start" in c]
        assert starts and all(f"source {ENV_FILE}" in c for c in starts), key
    # the env file is written before anything reads it, on every node
    assert f"> {ENV_FILE}" in filled["setup_commands"][0]


def test_tune_storage_is_cluster_wide(filled):
    storage = exports(filled)["OSTR_STORAGE"].strip('"')
    assert storage.startswith("s3://") and storage.endswith("/ostr_runs")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_commands_are_valid_bash(filled):
    """The commands are folded YAML scalars: check that each one still parses as a bash command line."""
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert filled[key], f"{key} is empty after merge_setup_commands"
    for key in (
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        for command in filled[key]:
            result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert result.returncode == 0, f"{key}: {command!r}\n{result.stderr}"
