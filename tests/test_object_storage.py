"""Launches on object storage, as on a cluster: a real S3-compatible server on loopback (moto, fixture
``s3_server``), reached the standard AWS way (``AWS_ENDPOINT_URL`` and keys in the environment). Bad storage is
one line and exit 2 before Ray starts, leaving nothing behind; a launch keeps its records in the bucket and
``status``, ``report`` and ``--resume`` read them from there; an MLflow server keeps its artifacts there too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ostr_ray.cli import app
from tests.conftest import REPO, S3_READ_ONLY, free_port, tiny_overrides, tiny_spec

runner = CliRunner()
pytest.importorskip("boto3", reason="boto3 comes with moto[server], in the dev extra")


def _sets(**extra) -> list[str]:
    return [a for k, v in tiny_overrides(**extra).items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _s3_env(monkeypatch, s3_server, **override) -> None:
    for key, value in {**s3_server.env, **override}.items():
        monkeypatch.setenv(key, value)


# ---------------------------------------------------------------------------------------------- bad input
BAD_STORAGE = [
    ("s3://{bucket}/runs", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "access denied: the credentials"),
    ("s3://no-such-bucket/runs", {}, "bucket 'no-such-bucket' does not exist"),
    ("s3://{bucket}/runs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:{down}"}, "cannot connect to the endpoint"),
    ("s3://{bucket}/" + S3_READ_ONLY + "/runs", {}, "access denied when writing"),
]


@pytest.mark.parametrize("storage,env,cause", BAD_STORAGE, ids=["credentials", "bucket", "endpoint", "read-only"])
@pytest.mark.parametrize("command", ["launch", "resume"])
def test_unusable_storage_is_one_line_exit_2_before_ray_and_creates_nothing(
    tmp_path, monkeypatch, s3_server, storage, env, cause, command
):
    import ray

    monkeypatch.chdir(tmp_path)
    down = str(free_port())
    _s3_env(monkeypatch, s3_server, **{k: v.format(down=down) for k, v in env.items()})
    storage = storage.format(bucket=s3_server.bucket)
    before = s3_server.keys()
    if command == "launch":
        args = ["launch", "--preset", "demo", "--storage", storage, "--name", "bad", *_sets()]
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    else:
        args = ["launch", "--resume", f"{storage}/bad"]
    started = time.time()
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert cause in result.output and storage in result.output, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output, result.output
    assert time.time() - started < 20
    assert not ray.is_initialized()
    assert s3_server.keys() == before and list(tmp_path.iterdir()) == []


READERS = {
    "status": ["status", "{uri}"],
    "report": ["report", "{uri}"],
    "retrain": ["retrain", "{uri}", "--dataset", "synthetic", "--dry-run"],
}


@pytest.mark.parametrize("command", sorted(READERS))
@pytest.mark.parametrize("storage,env,cause", BAD_STORAGE[:3], ids=["credentials", "bucket", "endpoint"])
def test_reading_a_launch_from_unusable_storage_is_one_line_exit_2(
    tmp_path, monkeypatch, s3_server, command, storage, env, cause
):
    """``status``, ``report`` and ``retrain`` of a launch in a bucket they cannot read: what to check, in one line."""
    monkeypatch.chdir(tmp_path)
    down = str(free_port())
    _s3_env(monkeypatch, s3_server, **{k: v.format(down=down) for k, v in env.items()})
    uri = storage.format(bucket=s3_server.bucket) + "/some-launch"
    result = runner.invoke(app, [arg.format(uri=uri) for arg in READERS[command]])
    assert result.exit_code == 2, result.output
    assert cause in result.output and uri in result.output, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output, result.output


def test_remote_storage_needs_a_tracking_server_named(tmp_path, monkeypatch, s3_server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _s3_env(monkeypatch, s3_server)
    before = s3_server.keys()
    result = runner.invoke(app, ["launch", "--preset", "demo", "--storage", f"s3://{s3_server.bucket}/runs", *_sets()])
    assert result.exit_code == 2 and "give --tracking-uri http://" in result.output, result.output
    assert s3_server.keys() == before and list(tmp_path.iterdir()) == []


def test_a_usable_bucket_passes_the_check_and_keeps_no_probe(monkeypatch, s3_server):
    from ostr_ray.orchestration.preflight import check_writable

    _s3_env(monkeypatch, s3_server)
    before = s3_server.keys()
    check_writable(f"s3://{s3_server.bucket}/fresh/prefix", "--storage")
    assert s3_server.keys() == before


def test_an_unreachable_tracking_server_leaves_no_storage_folder(tmp_path, monkeypatch):
    """Refused before any folder is made, by the CLI's preflight and by ``run_launch`` itself."""
    from ostr_ray.orchestration.run import run_launch
    from ostr_ray.tracking.store import TrackingError

    monkeypatch.chdir(tmp_path)
    down = f"http://127.0.0.1:{free_port()}"
    args = ["launch", "--preset", "demo", "--storage", str(tmp_path / "runs"), "--tracking-uri", down, *_sets()]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and down in result.output, result.output
    with pytest.raises(TrackingError, match=down):
        run_launch(tiny_spec(tmp_path / "deep" / "runs", "api", seeds="1", tracking_uri=down))
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_finished_launch_says_so_without_starting_ray(tmp_path):
    import ray

    from ostr_ray.experiment import LaunchDir, LaunchReport

    spec = tiny_spec(tmp_path, "done", seeds="1")
    LaunchDir(spec.experiment_path).write_spec(spec)
    report = LaunchReport(name="done", outcome="finished", stop_reason="every trial ended", launch=spec)
    LaunchDir(spec.experiment_path).write_report(report)
    result = runner.invoke(app, ["launch", "--resume", spec.experiment_path, "--json"])
    assert result.exit_code == 0, result.output
    assert f"launch {spec.experiment_path} already finished; nothing to resume" in result.output
    assert '"outcome": "finished"' in result.output and not ray.is_initialized()


# ---------------------------------------------------------------------------------------------- real launches
def _cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ostr_ray.cli", *args],
        cwd=REPO,
        env={**os.environ, **env, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


LAUNCH_RECORDS = ("launch.json", "coordinator.json", "report.json", "history.json", "mlflow_runs.json")
TRIAL_RECORDS = ("report.json", "search/checkpoint.pt", "checkpoint_000003/checkpoint.pt")
"""What a trial of the 4-epoch launch below keeps: its record, its search state and its newest Tune checkpoint."""


S3_EPOCHS = 4


@pytest.fixture(scope="module")
def mlflow_server(s3_server, tmp_path_factory):
    """``mlflow server`` as on the cluster's head: SQLite runs, artifacts proxied to the bucket's ``mlflow/``."""
    url, server = _mlflow_server(tmp_path_factory.mktemp("mlflow_server"), s3_server)
    try:
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_launch(s3_server, mlflow_server):
    """One undisturbed 2-seed launch as on a cluster (records in the bucket, runs on the MLflow server, whose
    artifacts are in the bucket too), shared by the tests that read it back or compare with it."""
    tracking = mlflow_server
    launch = ["launch", "--preset", "demo", "--seeds", "2", "--storage", f"s3://{s3_server.bucket}/runs"]
    launch += ["--name", "s3demo", "--tracking-uri", tracking, "--quiet", "--json"]
    done = _cli(*launch, *_sets(epochs=S3_EPOCHS), env=s3_server.env)
    assert done.returncode == 0, done.stderr[-3000:]
    return f"s3://{s3_server.bucket}/runs/s3demo", json.loads(done.stdout), tracking


@pytest.mark.slow
def test_a_launch_on_s3_lands_in_the_bucket_and_is_read_back_from_it(s3_server, s3_launch):
    uri, report, _ = s3_launch
    assert report["outcome"] == "finished" and report["experiment_path"] == uri
    keys = {k.removeprefix("runs/s3demo/") for k in s3_server.keys("runs/s3demo/")}
    assert set(LAUNCH_RECORDS) <= keys, sorted(keys)
    assert {f"demo-seed{s}/{name}" for s in (0, 1) for name in TRIAL_RECORDS} <= keys, sorted(keys)
    assert not (REPO / "s3:").exists()  # nothing went to a local folder named after the URI

    status = _cli("status", uri, "--json", env=s3_server.env)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "finished", status.stderr[-2000:]
    evidence = _cli("report", uri, env=s3_server.env)
    assert evidence.returncode == 0, evidence.stderr[-2000:]
    assert {"runs/s3demo/evidence.md", "runs/s3demo/evidence.json"} <= set(s3_server.keys("runs/s3demo/"))

    again = _cli("launch", "--resume", uri, "--quiet", "--json", env=s3_server.env)
    assert again.returncode == 0 and f"launch {uri} already finished" in again.stderr, again.stderr[-2000:]
    resumed = json.loads(again.stdout)
    assert resumed["outcome"] == "finished"
    assert resumed["variants"]["demo"]["seeds"] == report["variants"]["demo"]["seeds"]


@pytest.mark.slow
def test_retrain_takes_its_genotype_from_a_launch_in_the_bucket(s3_server, s3_launch):
    uri, report, _ = s3_launch
    consensus = report["variants"]["demo"]["consensus_genotype"]
    seed1 = report["variants"]["demo"]["seeds"]["1"]["genotypes"]["ostr"]
    for extra, expected in (([], consensus), (["--seed", "1"], seed1)):
        planned = _cli("retrain", uri, *extra, "--dataset", "synthetic", "--dry-run", "--json", env=s3_server.env)
        assert planned.returncode == 0, planned.stderr[-2000:]
        plan = json.loads(planned.stdout)
        assert plan["genotype"] == expected and plan["source"]["path"] == uri, plan


@pytest.mark.slow
def test_a_driver_killed_mid_launch_resumes_from_the_bucket_on_a_new_head(s3_server, s3_launch, tmp_path):
    """SIGKILL the driver and the Ray it started, then ``launch --resume s3://...`` from a new process with a
    fresh temporary folder (a new head node keeps nothing local): the genotypes of the undisturbed launch."""
    _, undisturbed, tracking = s3_launch
    uri = f"s3://{s3_server.bucket}/runs/killed"
    launch = ["launch", "--preset", "demo", "--seeds", "2", "--storage", f"s3://{s3_server.bucket}/runs"]
    launch += ["--name", "killed", "--tracking-uri", tracking, "--quiet", "--json", *_sets(epochs=S3_EPOCHS)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "ostr_ray.cli", *launch],
        cwd=REPO,
        env={**os.environ, **s3_server.env, "CUDA_VISIBLE_DEVICES": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its process group holds the local Ray it starts: all of it dies together
    )
    seen = []
    # Killed once the consensus of epoch 2 is out: each trial has checkpointed twice, which makes Tune save its
    # experiment state (CheckpointConfig(num_to_keep=2)), and none has deleted a checkpoint yet. (From the third
    # checkpoint on, Tune deletes the oldest before the snapshot that stops naming it is uploaded: a driver killed
    # in that window leaves a state naming a deleted checkpoint; seen once here, on a loaded machine.)
    try:
        for line in driver.stderr:
            seen.append(line)
            if line.startswith("demo epoch 2:"):
                break
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    assert seen and seen[-1].startswith("demo epoch 2:"), "".join(seen)[-3000:]
    assert "runs/killed/report.json" not in s3_server.keys("runs/killed/")

    new_head = tempfile.mkdtemp(prefix="oh", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        env = {**s3_server.env, "TMPDIR": new_head, "RAY_TMPDIR": new_head}
        resumed = _cli("launch", "--resume", uri, "--quiet", "--json", env=env)
    finally:
        shutil.rmtree(new_head, ignore_errors=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    assert report["outcome"] == "finished" and report["experiment_path"] == uri
    genotypes = {s: info["genotypes"] for s, info in report["variants"]["demo"]["seeds"].items()}
    expected = {s: info["genotypes"] for s, info in undisturbed["variants"]["demo"]["seeds"].items()}
    assert genotypes == expected
    assert report["variants"]["demo"]["consensus_genotype"] == undisturbed["variants"]["demo"]["consensus_genotype"]
    # the past epochs' statistics and reports came back from the bucket's journal: the history is whole
    history = {name: _history(s3_server, name) for name in ("killed", "s3demo")}
    assert history["killed"] == history["s3demo"], history
    epochs = tuple(range(1, S3_EPOCHS + 1))
    assert history["killed"]["stats"] == list(epochs) and set(history["killed"]["reports"].values()) == {epochs}


def _history(s3_server, name: str) -> dict:
    """Which epochs ``history.json`` of launch ``name`` holds: the consensus statistics, and each seed's reports."""
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"runs/{name}/history.json")["Body"].read()
    history = json.loads(body)
    return {
        "stats": [s["epoch"] for s in history["stats"]["demo"]],
        "reports": {t["seed"]: tuple(r["epoch"] for r in t["reports"]) for t in history["trials"]},
    }


def _mlflow_server(tmp_path, s3_server) -> tuple[str, subprocess.Popen]:
    """Start ``mlflow server`` on a free loopback port and wait for its health check."""
    port = free_port()
    env = {**os.environ, **s3_server.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
        + ["--artifacts-destination", f"s3://{s3_server.bucket}/mlflow"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return url, server
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            os.killpg(server.pid, 15)
            pytest.fail(f"mlflow server did not come up at {url} (exit {server.poll()})")
        time.sleep(0.5)


@pytest.mark.slow
def test_mlflow_server_keeps_the_launch_artifacts_in_the_bucket(tmp_path, s3_server, s3_launch, monkeypatch):
    from mlflow import MlflowClient

    # The server offers its S3 files as presigned URLs, which moto cannot serve while it checks credentials
    # (HTTP 500): this client takes the server's proxy instead (on AWS both work).
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    _, report, url = s3_launch
    assert report["mlflow"]["tracking_uri"] == url
    client = MlflowClient(tracking_uri=url)  # artifacts through the server's proxy: no S3 keys needed here
    stored = s3_server.keys("mlflow/")
    for trial, run_id in report["mlflow"]["children"].items():
        listed = [*client.list_artifacts(run_id), *client.list_artifacts(run_id, "plots")]
        names = {a.path for a in listed}
        heatmaps = sorted(n for n in names if n.startswith("plots/heatmaps_"))
        assert {"genotypes.json", "plots/cells.png"} <= names and heatmaps, (trial, sorted(names))
        for name in ("genotypes.json", "plots/cells.png", heatmaps[-1]):
            data = Path(client.download_artifacts(run_id, name, str(tmp_path / run_id))).read_bytes()
            key = [k for k in stored if k.endswith(f"/{run_id}/artifacts/{name}")]
            assert len(key) == 1, (trial, name, stored)
            in_bucket = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key[0])["Body"].read()
            assert data and in_bucket == data, (trial, name)
        genotypes = json.loads((tmp_path / run_id / "genotypes.json").read_text())
        seed = trial.rsplit("/", 1)[-1]
        assert genotypes == report["variants"]["demo"]["seeds"][seed]["genotypes"]
