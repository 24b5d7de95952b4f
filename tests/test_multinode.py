"""The scale-out path with the cloud taken out: a head and a worker started with `ray start` on loopback,
and `ostr-ray launch --address` running a 2-seed tiny search across them with storage on a shared path."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ostr_ray.core.config import build_config
from ostr_ray.core.search import Searcher
from tests.conftest import REPO, tiny_overrides

pytestmark = pytest.mark.slow  # subprocess launches and benchmarks

SCRIPT = REPO / "scripts" / "local_multinode.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_launch_against_a_two_node_local_cluster(tmp_path):
    storage = tmp_path / "shared"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(storage)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BIN": str(Path(sys.executable).parent)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "alive Ray nodes: 2" in result.stdout
    report = json.loads((storage / "launch_out.json").read_text())
    assert {s["status"] for s in report["variants"]["demo"]["seeds"].values()} == {"finished"}
    assert (storage / "multinode" / "report.json").is_file()


# ---------------------------------------------------------------------------------------------- node loss
class TwoNodeCluster:
    """A head and a worker node on loopback, each ``ray start --block`` in its own session, so that every process
    of one node (its raylet, agents and trial workers) is a descendant of that node's ``ray start``."""

    def __init__(self, temp_dir: str) -> None:
        from tests.conftest import free_port

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_TMPDIR": temp_dir, "CUDA_VISIBLE_DEVICES": ""}
        ray_bin = str(Path(sys.executable).parent / "ray")
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--temp-dir", temp_dir]
        common += ["--disable-usage-stats", "--block"]
        subprocess.run([ray_bin, "get-auth-token", "--generate"], env=self.env, capture_output=True, check=True)
        self.head = self._start([ray_bin, "start", "--head", "--port", str(self.port), *common])
        self._wait_for_nodes(1)
        self.worker = self._start([ray_bin, "start", "--address", self.address, *common])
        self._wait_for_nodes(2)

    def _start(self, command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def _wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        probe = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
        probe += "print(sum(n['Alive'] for n in ray.nodes()))"
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = subprocess.run(
                [sys.executable, "-c", probe, self.address], env=self.env, capture_output=True, text=True
            )
            if found.returncode == 0 and found.stdout.strip().isdigit() and int(found.stdout) >= count:
                return
            time.sleep(1)
        pytest.fail(f"the local cluster at {self.address} did not reach {count} nodes")

    def kill_worker_node(self) -> int:
        """SIGKILL every process of the worker node at once (as when its machine dies); returns how many."""
        return _kill_tree(self.worker.pid)

    def stop(self) -> None:
        for node in (self.worker, self.head):
            _kill_tree(node.pid)
            node.wait(timeout=30)


def _kill_tree(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    return len(processes)


@pytest.fixture
def two_node_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths live under it
    cluster = TwoNodeCluster(temp_dir)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


NODE_LOSS_EPOCHS = 6
NODE_LOSS_SETTINGS = dict(epochs=NODE_LOSS_EPOCHS, patience=0)


def _launch_args(storage: Path, name: str, tracking: str) -> list[str]:
    args = ["launch", "--preset", "demo", "--seeds", "2", "--cpus-per-trial", "1", "--storage", str(storage)]
    args += ["--name", name, "--tracking-uri", tracking, "--quiet", "--json"]
    settings = tiny_overrides(**NODE_LOSS_SETTINGS).items()
    return args + [a for k, v in settings for a in ("--set", f"{k}={json.dumps(v)}")]


def test_losing_a_worker_node_mid_launch_costs_one_line_and_no_result(tmp_path, two_node_cluster):
    """Kill every process of the worker node once both seeds have reported epoch 2: the seed it ran continues
    from its last checkpoint on the head, the user reads one line about it (no dump of the dead raylet's log, no
    epoch printed twice), the MLflow run has each epoch once, and the genotypes are those of an undisturbed
    search."""
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_MODE": "token"}
    command = [sys.executable, "-m", "ostr_ray.cli", *_launch_args(tmp_path, "lost", tracking)]
    driver = subprocess.Popen(
        [*command, "--address", two_node_cluster.address],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, killed = [], 0
    for line in driver.stderr:
        lines.append(line)
        if not killed and all(f"seed {s} epoch 2/{NODE_LOSS_EPOCHS}:" in "".join(lines) for s in (0, 1)):
            killed = two_node_cluster.kill_worker_node()
    out = driver.stdout.read()
    driver.wait(timeout=300)
    text = "".join(lines)
    assert killed, text[-3000:]
    assert driver.returncode == 0, text[-4000:]
    report = json.loads(out)
    assert report["outcome"] == "finished", report["stop_reason"]

    lost = [line for line in lines if " lost" in line]
    # the IP is the one Ray saw the trial at (here the machine's, both nodes being on loopback)
    assert len(lost) == 1 and re.fullmatch(r"node \S+ lost: demo seed [01] continues from epoch [2-5]\n", lost[0]), text
    assert "state-dump" not in text and "raylet" not in text.lower() and "Traceback" not in text, text[-4000:]
    epochs = [line.split(":")[0] for line in lines if " epoch " in line and "/" in line.split(":")[0]]
    assert len(epochs) == len(set(epochs)) == 2 * NODE_LOSS_EPOCHS, epochs

    client = MlflowClient(tracking_uri=tracking)
    for run_id in report["mlflow"]["children"].values():
        steps = [m.step for m in client.get_metric_history(run_id, "val_acc")]
        assert sorted(steps) == list(range(1, NODE_LOSS_EPOCHS + 1)), steps

    # undisturbed, each seed is what it would be searched alone (a trial is a seed's own search): so here
    found = report["variants"]["demo"]["seeds"]
    for seed in (0, 1):
        config = build_config("demo", {**tiny_overrides(**NODE_LOSS_SETTINGS), "seed": seed})
        assert found[str(seed)]["genotypes"] == Searcher(config).run().final_genotypes
