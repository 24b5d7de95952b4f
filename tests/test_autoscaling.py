"""Autoscaling, as on the cluster of ``ray_cluster.yaml``: Ray's own fake multi-node autoscaler (the provider
behind ``ray.cluster_utils.AutoscalingCluster``) with a CPU head and a GPU worker type that starts at zero.

A launch whose trials need GPU nodes says that its trials wait for resources (log lines, ``ostr-ray status``),
makes the cluster grow, finishes, and the idle workers go away; a launch no node type can hold is refused in
one line before any trial or node starts. The pieces (the waiting count, the node types of a launcher config,
the view and the status text) are also checked without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from ostr_ray.cli import app
from tests.conftest import REPO, free_port, tiny_overrides

pytestmark = pytest.mark.slow  # a Ray cluster with an autoscaler, launches as subprocesses

runner = CliRunner()

HEAD_TYPE = "ray.head.default"
"""ray_cluster.yaml's ``ray.head.cpu`` (a CPU head, too small for a trial); the fake provider names its head so."""
WORKER_TYPE = "ray.worker.gpu"
WORKER = {"CPU": 1, "GPU": 1, "ostr_gpu_node": 1}
"""ray_cluster.yaml's GPU worker in small: one trial per node. The fake node declares a GPU (Ray then gives the
trial CUDA_VISIBLE_DEVICES=0); torch finds no CUDA on this machine, so the trial searches on the CPU."""
MAX_WORKERS = 2
IDLE_TIMEOUT_MINUTES = 0.1
RAY_BIN = Path(sys.executable).parent / "ray"
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "CUDA_VISIBLE_DEVICES": ""}
"""Every process of the test's cluster (head, node watch, launches): token authentication, as ray_cluster.yaml's
nodes run; the token is ~/.ray/auth_token (``ray get-auth-token --generate`` makes it when missing)."""


# ---------------------------------------------------------------------------------------------- the cluster
class FakeAutoscalingCluster:
    """What ``AutoscalingCluster`` does, for this cluster alone: its ``start()`` and ``shutdown()`` run
    ``ray stop --force`` (every Ray on the machine), and the installed wheel lacks the ``example.yaml`` its config
    and the ``fake_multinode`` provider type read. So the same provider class is named as an ``external``
    provider, the head runs with ``ray start --block`` in a session of its own on free ports (autoscaler v2, as
    ``ray up`` starts it since Ray 2.50), and shutting down ends exactly that session's processes."""

    def __init__(self) -> None:
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head_id = FAKE_HEAD_NODE_ID
        self.temp_dir = tempfile.mkdtemp(prefix="ostr-as-", dir="/tmp")  # short: Ray's socket paths must fit
        self.config_path = Path(self.temp_dir) / "autoscaling.yaml"
        self.process: subprocess.Popen | None = None
        self.nodes: NodeWatch | None = None

    def config(self) -> dict:
        provider = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
        empty = dict.fromkeys(("initialization_commands", "setup_commands", "head_setup_commands"), [])
        empty |= dict.fromkeys(("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"), [])
        return {
            "cluster_name": "ostr-fake",
            "max_workers": MAX_WORKERS,
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
            "provider": {
                "type": "external",
                "module": provider,
                "gcs_address": self.address,
                "head_node_id": self.head_id,
                "launch_multiple": True,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "auth": {},
            "docker": {},
            "available_node_types": {
                HEAD_TYPE: {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
                WORKER_TYPE: {
                    "resources": {**WORKER, "object_store_memory": 100 * 2**20},
                    "node_config": {},
                    "min_workers": 0,
                    "max_workers": MAX_WORKERS,
                },
            },
            "head_node_type": HEAD_TYPE,
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            **empty,
        }

    def start(self, timeout: float = 90) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config()))
        subprocess.run([str(RAY_BIN), "get-auth-token", "--generate"], env=ENV, capture_output=True, check=True)
        env = {
            **{k: v for k, v in ENV.items() if k != "CUDA_VISIBLE_DEVICES"},  # its fake GPU nodes need one
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "5",  # Ray's default: a node comes as on a real cluster
            "RAY_enable_autoscaler_v2": "1",
            "RAY_CLOUD_INSTANCE_ID": self.head_id,
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": self.head_id,
            "RAY_NODE_TYPE_NAME": HEAD_TYPE,
        }
        ports = ("--dashboard-port", "--dashboard-agent-listen-port")
        command = [str(RAY_BIN), "start", "--head", "--block", "--port", str(self.port), "--num-cpus", "1"]
        command += [f"--autoscaling-config={self.config_path}", "--node-ip-address", "127.0.0.1"]
        command += ["--temp-dir", self.temp_dir, "--include-dashboard", "false", "--disable-usage-stats"]
        command += ["--object-store-memory", str(100 * 2**20), *(a for p in ports for a in (p, str(free_port())))]
        with open(Path(self.temp_dir) / "ray-start.log", "w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + timeout
        while time.time() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            time.sleep(1)
        self.nodes = NodeWatch(self.address)
        if not self.nodes.wait_for(lambda nodes: len(nodes) >= 1, timeout=max(deadline - time.time(), 10)):
            raise RuntimeError(f"the fake autoscaling cluster did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text()[-2000:]

    def shutdown(self) -> None:
        """SIGTERM to ``ray start --block`` (it stops the head's processes), then every process left in its
        session (the fake worker nodes the autoscaler started) by id."""
        if self.nodes is not None:
            self.nodes.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = self._session_pids()
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if left:
                time.sleep(3)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _session_pids(self) -> list[int]:
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry.name)) == self.process.pid:
                        pids.append(int(entry.name))
        return pids


WATCH_NODES = """
import json, sys, time
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo
client = GcsClient(address=sys.argv[1])
while True:
    nodes = client.get_all_node_info(timeout=10).values()
    print(json.dumps([dict(n.resources_total) for n in nodes if n.state == GcsNodeInfo.ALIVE]), flush=True)
    time.sleep(0.5)
"""


class NodeWatch:
    """The cluster's alive nodes (their resources) twice a second, from the GCS, in a process of its own: the
    cluster runs with token authentication (as ``ray_cluster.yaml``'s), which this test process does not."""

    def __init__(self, address: str) -> None:
        self.seen: list[list[dict[str, float]]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", WATCH_NODES, address],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.seen.append(json.loads(line))

    def now(self, timeout: float = 30) -> list[dict[str, float]]:
        """The nodes alive now (the next answer)."""
        count = len(self.seen)
        if not self.wait_for(lambda _: len(self.seen) > count, timeout):
            raise RuntimeError("the node watch stopped answering")
        return self.seen[-1]

    def wait_for(self, condition, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline and self.process.poll() is None:
            if self.seen and condition(self.seen[-1]):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def workers(nodes: list[dict[str, float]]) -> list[dict[str, float]]:
    return [n for n in nodes if "node:__internal_head__" not in n]


@pytest.fixture(scope="module")
def autoscaling_cluster():
    pytest.importorskip("ray")
    if sys.platform != "linux":
        pytest.skip("the fake multi-node provider and the cleanup by session need Linux")
    cluster = FakeAutoscalingCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()


def _sets(**extra) -> list[str]:
    return [a for k, v in tiny_overrides(**extra).items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _launch_args(cluster: FakeAutoscalingCluster, storage: Path, name: str, gpus: str, seeds: int) -> list[str]:
    args = [sys.executable, "-m", "ostr_ray.cli", "launch", "--address", cluster.address, "--preset", "demo"]
    args += ["--seeds", str(seeds), "--gpus-per-trial", gpus, "--cpus-per-trial", "1", "--storage", str(storage)]
    return [*args, "--name", name, "--quiet", "--json", *_sets()]


# ---------------------------------------------------------------------------------------------- on the cluster
def test_a_launch_no_node_type_can_hold_is_refused_in_one_line_before_any_trial(autoscaling_cluster, tmp_path):
    started = time.time()
    result = subprocess.run(
        _launch_args(autoscaling_cluster, tmp_path, "toobig", gpus="2", seeds=2),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert "no node this autoscaling Ray cluster can have fits one trial (1 CPU, 2 GPUs)" in result.stderr
    assert f"{WORKER_TYPE} (1 CPU, 1 GPU, 1 ostr_gpu_node, up to {MAX_WORKERS})" in result.stderr, result.stderr
    assert not (tmp_path / "toobig").exists()
    assert workers(autoscaling_cluster.nodes.now()) == []  # nothing was asked of the autoscaler
    assert time.time() - started < 120


def test_a_gpu_launch_waits_for_nodes_says_so_grows_the_cluster_finishes_and_the_workers_go(
    autoscaling_cluster, tmp_path
):
    """Three GPU trials, room for two: the cluster grows to its two GPU workers while all three wait (a node
    takes seconds to come), and the third waits until a node is free again (a trial's length: the waiting the
    test can count on); the log and ``ostr-ray status`` say so, then that none waits any more."""
    from ostr_ray.orchestration.status import launch_status

    nodes = autoscaling_cluster.nodes
    assert workers(nodes.now()) == []  # min_workers 0: no GPU node before the launch
    watched_from = len(nodes.seen)
    path = tmp_path / "grow"
    launch = subprocess.Popen(
        _launch_args(autoscaling_cluster, tmp_path, "grow", gpus="1", seeds=MAX_WORKERS + 1),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    status_seen, deadline = None, time.time() + 300
    try:
        while launch.poll() is None and time.time() < deadline:
            if status_seen is None and (path / "waiting.json").is_file() and launch_status(str(path)).waiting:
                status_seen = runner.invoke(app, ["status", str(path), "--json"])
            time.sleep(0.5)
    finally:
        if launch.poll() is None:
            launch.kill()
    out, err = launch.communicate(timeout=30)
    assert launch.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["outcome"] == "finished" and len(report["variants"]["demo"]["seeds"]) == MAX_WORKERS + 1
    waits = re.search(r"^[1-3] trials? waiting for resources: 1 CPU, 1 GPU each$", err, re.MULTILINE)
    assert waits, err
    assert err.rstrip().count("\n") < 40 and "Traceback" not in err, err  # the plain lines, no Ray logs
    # the third trial waits, gets a node once a trial ends, and only then searches
    assert waits.start() < err.rindex("no trial waiting for resources now") < err.rindex("epoch 1/3"), err
    grown = max((workers(seen) for seen in nodes.seen[watched_from:]), key=len)
    assert len(grown) == MAX_WORKERS, nodes.seen[-3:]
    assert all(n.get("ostr_gpu_node") == 1 and n.get("GPU") == 1 for n in grown), grown
    assert status_seen is not None and status_seen.exit_code == 0, "ostr-ray status never saw the waiting trials"
    shown = json.loads(status_seen.output)
    assert shown["state"] in ("starting", "live") and shown["waiting"]["count"] >= 1, shown
    assert "waiting for resources: 1 CPU, 1 GPU each" in shown["stop_reason"], shown["stop_reason"]

    # idle_timeout_minutes 0.1: the autoscaler ends the idle workers within seconds; the head stays
    assert nodes.wait_for(lambda alive: not workers(alive), timeout=120), f"idle workers stayed: {nodes.seen[-1]}"
    assert len(nodes.now()) == 1


# ---------------------------------------------------------------------------------------------- the pieces
def _trial(trial_id: str, status: str, **resources: float) -> SimpleNamespace:
    factory = SimpleNamespace(required_resources=resources or {"CPU": 1.0, "GPU": 1.0})
    return SimpleNamespace(trial_id=trial_id, status=status, placement_group_factory=factory)


def test_trials_count_as_waiting_after_the_grace_and_only_while_no_resources_are_granted():
    from ostr_ray.orchestration.capacity import Waiting, WaitWatch, granted_placement_groups

    granted = [0]
    watch = WaitWatch(grace_s=5, check_every_s=1, granted=lambda: granted[0])
    trials = [_trial("a", "PENDING"), _trial("b", "PENDING")]
    assert watch.update(trials, now=100) == Waiting()  # the first look always answers (the record is rewritten)
    assert watch.update(trials, now=100.5) is None  # too soon to look again
    assert watch.update(trials, now=103) is None  # pending, but not for long: unchanged
    waiting = watch.update(trials, now=106)
    assert waiting == Waiting(2, "1 CPU, 1 GPU each", 100)
    assert waiting.line() == "2 trials waiting for resources: 1 CPU, 1 GPU each"
    assert watch.update(trials, now=108) is None  # unchanged: nothing to tell

    granted[0] = 1  # Ray placed one: its actor is starting, it does not wait
    assert watch.update(trials, now=110).line() == "1 trial waiting for resources: 1 CPU, 1 GPU each"
    trials = [_trial("a", "RUNNING"), _trial("b", "PENDING")]
    assert watch.update(trials, now=112) is None  # the started one runs now: still one waiting
    granted[0] = 2
    assert watch.update(trials, now=114) == Waiting()
    assert Waiting().line() == "no trial waiting for resources now"

    watch.granted = granted_placement_groups  # Tune pickles the callback and its watch (a lambda would not do)
    restored = pickle.loads(pickle.dumps(watch))
    restored.granted = lambda: 0
    assert restored.current is None and restored.update(trials, now=200) == Waiting()  # afresh: not since 100
    assert restored.update(trials, now=206) == Waiting(1, "1 CPU, 1 GPU each", 200)


def test_trials_asking_for_different_resources_are_counted_apart():
    from ostr_ray.orchestration.capacity import per_trial

    trials = [_trial("a", "PENDING", CPU=1.0, GPU=1.0), _trial("b", "PENDING", CPU=2.0, memory=2e9)]
    trials.append(_trial("c", "PENDING", CPU=1.0, GPU=1.0))
    assert per_trial(trials) == "2 x 1 CPU, 1 GPU; 1 x 2 CPUs, 2.0 GB memory"


def test_the_live_view_says_when_trials_wait_as_a_line_and_under_the_table():
    from ostr_ray.console.live import LaunchView

    line = "2 trials waiting for resources: 1 CPU, 1 GPU each"
    plain = StringIO()
    quiet = LaunchView("ostr", quiet=True, console=Console(file=plain, width=200))
    quiet.on_trials_waiting(2, line)
    quiet.on_trials_waiting(0, "no trial waiting for resources now")
    assert plain.getvalue().splitlines() == [line, "no trial waiting for resources now"]

    screen = StringIO()
    live = LaunchView("ostr", console=Console(file=screen, width=120, force_terminal=True))
    live.on_trials_waiting(2, line)
    assert live.render().renderables[-1].plain == line
    live.close()
    assert line in screen.getvalue()
    live.on_trials_waiting(0, "no trial waiting for resources now")
    assert len(live.render().renderables) == 1  # none waiting: the table alone


def test_status_of_a_live_launch_names_the_waiting_trials(tmp_path):
    from ostr_ray.experiment import LaunchDir
    from ostr_ray.experiment.records import DriverRecord
    from ostr_ray.orchestration.capacity import Waiting, write_waiting
    from ostr_ray.orchestration.status import launch_status

    now = time.time()
    LaunchDir(tmp_path).write_driver(DriverRecord(socket.gethostname(), os.getpid(), now - 60, now))
    write_waiting(str(tmp_path), Waiting(3, "1 CPU, 1 GPU each", now - 42))
    found = launch_status(str(tmp_path), now=now)
    assert found.state == "starting"
    assert found.stop_reason.endswith("; 3 trials waiting for resources: 1 CPU, 1 GPU each (for 42 s)")
    assert found.to_json()["waiting"] == {"count": 3, "resources": "1 CPU, 1 GPU each", "since": now - 42}

    write_waiting(str(tmp_path), Waiting())  # the nodes came: status no longer says so
    assert launch_status(str(tmp_path), now=now).waiting is None


def test_the_node_types_of_ray_cluster_yaml_as_the_resource_check_reads_them():
    from ostr_ray.orchestration.node_types import config_node_types

    types = {t.name: t for t in config_node_types(yaml.safe_load((REPO / "ray_cluster.yaml").read_text()))}
    assert types["ray.head.cpu"].resources == {"CPU": 4} and types["ray.head.cpu"].count == 1
    gpu = types["ray.worker.gpu"]
    assert gpu.count == 8 and gpu.fits({"CPU": 1, "GPU": 1}) and not gpu.fits({"CPU": 1, "GPU": 2})
    assert not types["ray.head.cpu"].fits({"CPU": 1, "GPU": 0.25})
    assert gpu.describe() == "ray.worker.gpu (8 CPUs, 1 GPU, 1 ostr_gpu_node, up to 8)"
