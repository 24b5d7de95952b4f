"""The GPU check's scripts run on CPU at tiny sizes, so they do not rot between the rare GPU sessions.

These check that each script runs and writes well-formed rows; the figures themselves are for the README,
never asserted (timings on a shared CI machine mean nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess launches and benchmarks

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_gpu_retrain_smoke_writes_every_variant(tmp_path):
    out = tmp_path / "retrain.json"
    _run("benchmarks/gpu_retrain.py", str(out), "--smoke", "--networks", "cifar")
    rows = json.loads(out.read_text())["rows"]
    assert [(r["bf16_amp"], r["channels_last"]) for r in rows] == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    assert all(r["images_per_s"] > 0 and r["protocol"] == "darts-cifar" for r in rows)


# The launch path pays a Ray start and an MLflow record per seed count: one count (2 trials) shows it works.
@pytest.mark.parametrize("via,counts", [("processes", (1, 2)), ("launch", (2,))])
def test_gpu_pack_on_cpu_measures_each_seed_count(tmp_path, via, counts):
    out = tmp_path / "pack.json"
    stdout = _run(
        "benchmarks/gpu_pack.py",
        "--device",
        "cpu",
        "--seeds",
        ",".join(map(str, counts)),
        "--steps",
        "2",
        "--batch",
        "4",
        "--via",
        via,
        "--json",
        str(out),
    )
    rows = json.loads(out.read_text())
    assert [(r["seeds"], r["via"], len(r["per_seed_images_per_s"])) for r in rows] == [(n, via, n) for n in counts]
    assert all(r["aggregate_images_per_s"] == pytest.approx(sum(r["per_seed_images_per_s"])) for r in rows)
    assert "| 2 | " + via in stdout


def test_gpu_pack_refuses_a_single_epoch():
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_pack.py", "--epochs", "1"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2 and "--epochs must be >= 2" in done.stderr


def test_bench_graph_counts_saved_bytes_and_nodes(tmp_path):
    out = tmp_path / "graph.json"
    _run("benchmarks/bench_graph.py", "--presets", "darts-cifar10,pcdarts-cifar10", "--set",
         "space_kwargs={C: 4, layers: 3}", "--set", "batch_size=2", "--json", str(out))  # fmt: skip
    rows = json.loads(out.read_text())
    assert [r["preset"] for r in rows] == ["darts-cifar10", "pcdarts-cifar10"]
    assert all(r["saved_mib"] > 0 and r["autograd_nodes"] > 100 and r["batch_size"] == 2 for r in rows)


def test_bench_driver_replays_reports_through_the_driver_path(tmp_path):
    out = tmp_path / "driver.json"
    stdout = _run("benchmarks/bench_driver.py", "--trials", "4", "--epochs", "2", "--space", "nb201",
                  "--json", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["reports"] == 8 and result["epochs_summarised"] == 2
    assert 0 < result["median_ms"] <= result["p99_ms"] <= result["worst_ms"]
    assert result["state_bytes"] > 0 and result["recorder_errors"] == 0
    assert 0 < result["mlflow_calls_per_report"] < 50
    assert "median" in stdout and "MLflow:" in stdout and "machine:" in stdout
