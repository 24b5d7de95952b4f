"""MLflow as the launch's record, against real stores: the run tree of a tiny launch in SQLite, one value per
epoch after re-sent epochs, a restarted driver and Ctrl-C + resume, fail-fast on an unreachable server, a real
``mlflow server`` over HTTP, and the plots."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ostr_ray.core.coordinator import TrialKey
from ostr_ray.core.events import EpochReport
from ostr_ray.core.summaries import SeedSummary, VariantSummary
from ostr_ray.experiment import LaunchReport
from ostr_ray.experiment.layout import MLFLOW_RUNS as RUNS_FILE
from ostr_ray.orchestration.run import run_launch
from ostr_ray.tracking import plots
from ostr_ray.tracking.recorder import LaunchRecorder
from ostr_ray.tracking.schema import flatten_spec
from ostr_ray.tracking.store import TrackingError, check_tracking_uri, default_tracking_uri, resolve_tracking_uri
from searchspaces import get_space
from searchspaces.darts_genotype import DARTS_V2
from tests.conftest import REPO, tiny_spec

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

NB201_CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    """The tests choose their stores; a developer's MLFLOW_TRACKING_URI must not redirect them."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def local_ray():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def fake_report(space_name: str, seed: int = 0, epoch: int = 1, epochs: int = 3) -> EpochReport:
    """An EpochReport with random matrices of the space's shape (plots and recorder unit tests)."""
    space = get_space(space_name)
    rng = np.random.default_rng(100 * seed + epoch)

    def matrices():
        return {c: rng.normal(size=space.alpha_shape) for c in space.cell_types}

    alphas = matrices()
    betas = {c: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True) for c, a in alphas.items()}
    genotype = NB201_CELL if space_name == "nb201" else DARTS_V2.to_str()
    return EpochReport(
        epoch=epoch,
        epochs=epochs,
        seed=seed,
        space=space_name,
        train_loss=2.0 / epoch,
        train_acc=0.1 * epoch,
        val_loss=2.5 / epoch,
        val_acc=0.1 * epoch,
        w_lr=0.025,
        a_lr=3e-4,
        arch_active=True,
        alphas=alphas,
        betas=betas,
        scores={"ostr": matrices(), "naive": matrices()},
        stderr={"ostr": matrices(), "naive": matrices()},
        genotypes={"ostr": genotype, "magnitude": genotype},
        changed={"ostr": epoch == 1, "magnitude": False},
        stable_for={"ostr": epoch - 1, "magnitude": epoch - 1},
        decisiveness={},
        epoch_seconds=1.0,
        images_per_s=100.0,
    )


# ---------------------------------------------------------------------------------------------- plots
@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_plots_write_non_empty_pngs(tmp_path, space):
    report = fake_report(space, epoch=2)
    figures = {
        "heatmaps": plots.report_heatmaps(report),
        "cells": plots.cell_figure(space, report.genotypes),
        "seeds": plots.seed_grid(space, {0: report.genotypes["ostr"], 1: report.genotypes["ostr"]}, "ostr"),
        "agreement": plots.agreement_chart([[1, 0.5, 0, None], [2, 1.0, 0, 0.4], [3, 1.0, 1, 0.6]], "demo"),
    }
    for name, figure in figures.items():
        path = plots.save_png(figure, tmp_path / f"{name}.png")
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    assert get_space("nb201").row_labels()[0] == "1<-0"
    assert get_space("darts").row_labels()[2] == "n1<-c[k-2]"


# ---------------------------------------------------------------------------------------------- URIs
def test_tracking_uri_resolution(tmp_path, monkeypatch):
    path = str(tmp_path / "launch")
    assert default_tracking_uri(path) == f"sqlite:///{tmp_path / 'launch' / 'mlflow.db'}"
    assert resolve_tracking_uri(None, path) == default_tracking_uri(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, path) == "http://env:5000"
    assert resolve_tracking_uri("http://flag:5000", path) == "http://flag:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(TrackingError, match="--tracking-uri"):
        resolve_tracking_uri(None, "s3://bucket/runs/launch")


def test_unreachable_server_fails_fast_with_one_line():
    started = time.time()
    with pytest.raises(TrackingError) as caught:
        check_tracking_uri("http://127.0.0.1:1")
    assert time.time() - started < 30
    assert "http://127.0.0.1:1" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_cli_unreachable_tracking_uri_exits_2_before_any_trial(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ostr_ray.cli", "launch", "--storage", str(tmp_path), "--name", "nowhere"]
        + ["--seeds", "2", "--epochs", "1", "--tracking-uri", "http://127.0.0.1:1", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "http://127.0.0.1:1" in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "nowhere" / "launch.json").exists()  # nothing ran, Ray never started


# ---------------------------------------------------------------------------------------------- store checks
def _runs(client: MlflowClient, experiment_name: str) -> tuple[object, list]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no MLflow experiment {experiment_name!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(int(m.step) for m in client.get_metric_history(run_id, key))


def _artifact(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> Path:
    dst = tmp_path / "downloads" / run_id
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def _check_run_tree(client, name, seeds, epochs, tmp_path, *, heatmap_epochs=()):
    parent, children = _runs(client, name)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["ostr.role"] == "parent" and tags["ostr.launch_path"].endswith(name)
    for key in ("ostr.version", "torch.version", "ray.version", "consensus_genotype", "agreement"):
        assert tags.get(key), key
    assert tags["consensus_genotype"].startswith("|")
    assert parent.data.params["seeds"] == json.dumps(seeds)
    assert parent.data.params["demo.epochs"] == str(epochs)
    assert _steps(client, parent.info.run_id, "agreement") == list(range(1, epochs + 1))
    report = json.loads(_artifact(client, parent.info.run_id, "report.json", tmp_path).read_text())
    assert report["name"] == name and report["mlflow"]["parent_run_id"] == parent.info.run_id
    assert report["schema"] == "ostr-ray.launch-report"
    for png in ("plots/agreement_demo.png", "plots/seeds_demo.png"):
        assert _artifact(client, parent.info.run_id, png, tmp_path).read_bytes().startswith(PNG), png

    assert sorted(int(c.data.params["seed"]) for c in children) == seeds
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("ostr.failure_reason")
        assert "ostr.failure_reason" not in child.data.tags
        seed = child.data.params["seed"]
        assert child.data.tags["ostr.trial"] == f"demo/{seed}"
        assert child.data.params["variant"] == child.data.params["preset"] == "demo"
        for key in ("train_loss", "val_acc", "images_per_s", "ostr_stable_for"):
            assert _steps(client, child.info.run_id, key) == list(range(1, epochs + 1)), key
        genotypes = json.loads(_artifact(client, child.info.run_id, "genotypes.json", tmp_path).read_text())
        assert genotypes["ostr"].startswith("|")
        for criterion, genotype in genotypes.items():
            assert child.data.tags[f"genotype.{criterion}"] == genotype
        assert genotypes == report["variants"]["demo"]["seeds"][seed]["genotypes"]
        history = json.loads(_artifact(client, child.info.run_id, "history.json", tmp_path).read_text())
        assert [h["epoch"] for h in history["epochs"]] == list(range(1, epochs + 1))
        last = EpochReport.from_json(history["epochs"][-1])
        assert last.alphas["normal"].shape == (6, 5) and last.genotypes == genotypes
        names = {f.path for f in client.list_artifacts(child.info.run_id, "plots")}
        assert "plots/cells.png" in names
        assert {f"plots/heatmaps_epoch_{e:03d}.png" for e in (*heatmap_epochs, epochs)} <= names
        png = _artifact(client, child.info.run_id, f"plots/heatmaps_epoch_{epochs:03d}.png", tmp_path)
        assert png.read_bytes().startswith(PNG)
    return parent, children


# ---------------------------------------------------------------------------------------------- launches
def test_two_seed_launch_run_tree_in_sqlite(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "tree", seeds="2")
    stray = {name: (Path.cwd() / name).exists() for name in ("mlruns", "mlartifacts")}
    recorder = LaunchRecorder.from_spec(spec, plot_every=2)
    report = run_launch(spec, recorder=recorder)
    assert recorder.errors == []
    assert report.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'tree' / 'mlflow.db'}"
    assert {name: (Path.cwd() / name).exists() for name in stray} == stray  # nothing written to the cwd
    client = MlflowClient(tracking_uri=report.mlflow.tracking_uri)
    parent, children = _check_run_tree(client, "tree", [0, 1], 3, tmp_path, heatmap_epochs=(2,))
    saved = json.loads((tmp_path / "tree" / RUNS_FILE).read_text())
    assert saved["parent_run_id"] == parent.info.run_id
    assert sorted(saved["children"].values()) == sorted(c.info.run_id for c in children)
    # parent params: the whole resolved spec, one param per variant setting
    assert set(flatten_spec(spec)) <= set(parent.data.params)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, "the MLflow server exited"
        assert time.time() < deadline, "the MLflow server never became healthy"
        time.sleep(1)


# MLflow 3's server otherwise starts job-runner (huey) processes, needless here
NO_JOBS = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def test_launch_recorded_on_a_real_mlflow_server(tmp_path, local_ray):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
        + ["--artifacts-destination", str(tmp_path / "server-artifacts")]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env=NO_JOBS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_healthy(url, server)
        spec = tiny_spec(tmp_path, "served", seeds="2", tracking_uri=url)
        report = run_launch(spec)
        assert report.mlflow.tracking_uri == url
        assert not (tmp_path / "served" / "mlflow.db").exists()

        def api(path, body=None):
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(
                f"{url}/api/2.0/mlflow/{path}", data=data, method="POST" if data else "GET"
            )
            request.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())

        experiment = api("experiments/get-by-name?experiment_name=served")["experiment"]
        runs = api("runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        assert len(runs) == 3 and {r["info"]["status"] for r in runs} == {"FINISHED"}
        parent_id = report.mlflow.parent_run_id
        assert sorted(t.get("ostr.trial", "") for t in tags) == ["", "demo/0", "demo/1"]
        assert sum(t.get("mlflow.parentRunId") == parent_id for t in tags) == 2
        # artifacts went through the server's proxy
        _check_run_tree(MlflowClient(tracking_uri=url), "served", [0, 1], 3, tmp_path)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


# ---------------------------------------------------------------------------------------------- retries
@pytest.mark.slow
def test_resent_epochs_and_a_restarted_driver_never_duplicate_runs_or_values(tmp_path):
    """What a retried trial (backfilled epochs) and a resumed driver look like to the recorder."""
    spec = tiny_spec(tmp_path, "retry", seeds="2")
    keys = [TrialKey("demo", 0), TrialKey("demo", 1)]
    first = LaunchRecorder.from_spec(spec)
    first.start(spec)
    for epoch in (1, 2):
        for key in keys:
            first.on_trial_report(key, fake_report("nb201", key.seed, epoch))
    for epoch in (1, 2):  # seed 1's trial is retried from its checkpoint: its epochs are sent again
        first.on_trial_report(keys[1], fake_report("nb201", 1, epoch))
    parent_id = first.parent_run_id
    children = dict(first.describe().children)
    first._parent_open = False  # the driver dies (SIGKILL): no finish, no abort, runs stay RUNNING

    for lookup in ("mapping file", "tags"):
        if lookup == "tags":
            (tmp_path / "retry" / RUNS_FILE).unlink()
        again = LaunchRecorder.from_spec(spec)
        again.start(spec)
        assert again.parent_run_id == parent_id, lookup
        for epoch in (1, 2, 3):  # a restored trial re-sends its epochs (backfill), then goes on
            for key in keys:
                again.on_trial_report(key, fake_report("nb201", key.seed, epoch))
        assert again.describe().children == children, lookup
        if lookup == "tags":
            for key in keys:
                again.on_trial_finished(key, "finished", "")
            again.finish(LaunchReport(stop_reason="every trial ended"))
        else:
            again._parent_open = False
        assert again.errors == []

    client = MlflowClient(tracking_uri=default_tracking_uri(spec.experiment_path))
    parent, runs = _runs(client, "retry")
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert sorted(r.info.run_id for r in runs) == sorted(children.values())
    for run in runs:
        assert run.info.status == "FINISHED"
        assert _steps(client, run.info.run_id, "train_loss") == [1, 2, 3]
        history = json.loads(_artifact(client, run.info.run_id, "history.json", tmp_path).read_text())
        assert [h["epoch"] for h in history["epochs"]] == [1, 2, 3]


def _report_of(statuses: dict[int, str]) -> LaunchReport:
    seeds = {seed: SeedSummary(status=status) for seed, status in statuses.items()}
    return LaunchReport(stop_reason="every trial ended", variants={"demo": VariantSummary(seeds=seeds)})


def test_a_trial_failing_before_its_first_report_gets_a_failed_child(tmp_path):
    spec = tiny_spec(tmp_path, "early-fail", seeds="1")
    recorder = LaunchRecorder.from_spec(spec)
    recorder.start(spec)
    recorder.on_trial_finished(TrialKey("demo", 0), "failed", "data set missing")
    recorder.finish(_report_of({0: "failed"}))
    client = MlflowClient(tracking_uri=recorder.tracking_uri)
    parent, children = _runs(client, "early-fail")
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FAILED"]
    assert children[0].data.tags["ostr.failure_reason"] == "data set missing"


@pytest.mark.slow
def test_ui_command_serves_the_launch_record_and_stops_cleanly(tmp_path):
    spec = tiny_spec(tmp_path, "look", seeds="1")
    recorder = LaunchRecorder.from_spec(spec)
    recorder.start(spec)
    for epoch in (1, 2):
        recorder.on_trial_report(TrialKey("demo", 0), fake_report("nb201", 0, epoch))
    recorder.finish(_report_of({0: "finished"}))
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "ostr_ray.cli", "ui", str(tmp_path / "look"), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", ui)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=look"
        ) as answer:
            assert json.loads(answer.read())["experiment"]["name"] == "look"
    finally:
        ui.terminate()  # the CLI stops its server's whole process group, as on Ctrl-C
        out, _ = ui.communicate(timeout=60)
    assert ui.returncode == 0 and f"http://127.0.0.1:{port}" in out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()
