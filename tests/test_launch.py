"""``ostr-ray launch`` on a local Ray with tiny supernets: end to end, early stops, a killed trial retried
from its checkpoint, a killed driver resumed, a diverging seed, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ostr_ray.core.config import build_config
from ostr_ray.core.search import Searcher
from ostr_ray.experiment import LaunchDir
from ostr_ray.orchestration.run import run_launch
from ostr_ray.orchestration.spec import LaunchError, parse_seeds
from tests.conftest import REPO, tiny_overrides, tiny_spec


def test_three_seed_launch_end_to_end_matches_in_process_search(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "e2e", seeds="3")
    report = run_launch(spec)
    variant = report.variants["demo"]
    assert sorted(variant.seeds) == [0, 1, 2]
    assert all(s.status == "finished" and s.last_epoch == 3 for s in variant.seeds.values())
    assert [h[0] for h in variant.history] == [1, 2, 3]
    assert variant.consensus_genotype.startswith("|")
    assert 0 < variant.agreement <= 1
    assert report.search_cost_trial_hours > 0
    assert LaunchDir(tmp_path / "e2e").read_report().to_json() == json.loads(json.dumps(report.to_json()))
    # every trial wrote the same search record `ostr-ray search` writes
    record = LaunchDir(tmp_path / "e2e").read_report()
    from ostr_ray.experiment import SearchDir

    trial_record = SearchDir(tmp_path / "e2e" / "demo-seed1").read_record()
    assert trial_record.result.final_genotypes == record.variants["demo"].seeds[1].genotypes
    assert trial_record.config["seed"] == 1 and len(trial_record.result.history) == 3
    from typer.testing import CliRunner

    from ostr_ray.cli import app

    status = CliRunner().invoke(app, ["status", str(tmp_path / "e2e"), "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert {s["last_epoch"] for s in shown["variants"]["demo"]["seeds"].values()} == {3}
    assert (shown["state"], shown["stop_reason"]) == ("finished", report.stop_reason)
    # a trial runs exactly the in-process search of the same seed
    alone = Searcher(build_config("demo", tiny_overrides(seed=1, threads=1))).run()
    assert variant.seeds[1].genotypes == alone.final_genotypes


def test_seed_and_experiment_early_stops(tmp_path, local_ray):
    # alpha frozen: every seed's magnitude genotype holds from epoch 1, so Algorithm 1 stops each seed
    # after 1 + patience epochs, and the consensus (all seeds agree? not necessarily) may stop the launch.
    spec = tiny_spec(
        tmp_path, "stops", seeds="2", epochs=8, a_lr=1e-12, criterion="magnitude", patience=2, agreement=0.5
    )
    report = run_launch(spec)
    seeds = report.variants["demo"].seeds
    assert all(s.last_epoch == 3 for s in seeds.values())
    assert all("Algorithm 1" in (s.stop_reason or "") for s in seeds.values())
    assert "consensus held 2 epochs" in report.stop_reason


def test_killed_trial_is_retried_from_its_checkpoint_with_the_same_result(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "kill", seeds="0,1", epochs=4)
    killed = {}

    class KillSeedOneOnce:
        def on_trial_report(self, key, report):
            if key.seed == 1 and report.epoch == 2 and not killed:
                pid = int((tmp_path / "kill" / "demo-seed1" / "worker.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid

        def on_epoch_stats(self, stats):
            pass

    report = run_launch(spec, listeners=[KillSeedOneOnce()])
    assert killed, "the trial was never killed"
    seeds = report.variants["demo"].seeds
    assert seeds[1].status == "finished" and seeds[1].last_epoch == 4
    assert [h[0] for h in report.variants["demo"].history] == [1, 2, 3, 4]
    alone = Searcher(build_config("demo", tiny_overrides(seed=1, epochs=4, threads=1))).run()
    assert seeds[1].genotypes == alone.final_genotypes


def test_a_diverging_seed_fails_alone(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "nan", seeds="0,1", epochs=2)
    spec.variants["demo"]["w_lr"] = 1e30
    spec.variants["demo"]["grad_clip"] = 1e30
    # only seed 1 diverges: give the trials their own configs through a second variant
    healthy = dict(spec.variants["demo"], w_lr=0.025, grad_clip=5.0)
    spec.variants = {"diverging": spec.variants["demo"], "healthy": healthy}
    spec.seeds = [0]
    report = run_launch(spec)
    failed = report.variants["diverging"].seeds[0]
    assert failed.status == "failed" and "non-finite" in failed.reason
    assert report.variants["healthy"].seeds[0].status == "finished"
    # some trials failed: outcome `partial`, exit status 3, MLflow parent run FINISHED, one line per failed seed
    from mlflow import MlflowClient

    from ostr_ray.cli.launch import exit_code
    from ostr_ray.orchestration.status import launch_status

    assert report.outcome == "partial" and list(report.failures) == ["diverging/0"]
    assert "non-finite" in report.failures["diverging/0"] and "\n" not in report.failures["diverging/0"]
    assert report.stop_reason.endswith("; 1 trial(s) failed")
    assert exit_code(report) == 3
    assert LaunchDir(spec.experiment_path).read_report().outcome == "partial"
    assert launch_status(spec.experiment_path).state == "partial"
    client = MlflowClient(tracking_uri=report.mlflow.tracking_uri)
    assert client.get_run(report.mlflow.parent_run_id).info.status == "FINISHED"
    children = {key: client.get_run(run).info.status for key, run in report.mlflow.children.items()}
    assert children == {"diverging/0": "FAILED", "healthy/0": "FINISHED"}


def _cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "ostr_ray.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        **kw,
    )


@pytest.mark.slow
def test_killed_driver_resumes_without_losing_or_repeating_epochs(tmp_path):
    settings = tiny_overrides(patience=0, epochs=6)
    common = ["--preset", "demo", "--storage", str(tmp_path), "--name", "resume", "--quiet"]
    for key, value in settings.items():
        common += ["--set", f"{key}={json.dumps(value)}"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "ostr_ray.cli", "launch", "--seeds", "2", *common],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    snapshot = tmp_path / "resume" / "coordinator.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(1)
        if snapshot.is_file():
            history = json.loads(snapshot.read_text())["variants"].get("demo", {}).get("history", [])
            if len(history) >= 2:
                break
    else:
        driver.kill()
        pytest.fail("the launch never reached epoch 2")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray, as a crash would
    driver.wait()
    done = _cli("launch", "--resume", str(tmp_path / "resume"), "--quiet", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    variant = report["variants"]["demo"]
    assert [h[0] for h in variant["history"]] == [1, 2, 3, 4, 5, 6]
    assert all(s["last_epoch"] == 6 and s["status"] == "finished" for s in variant["seeds"].values()), variant["seeds"]
    alone = Searcher(build_config("demo", tiny_overrides(seed=0, epochs=6, patience=0, threads=1))).run()
    assert variant["seeds"]["0"]["genotypes"] == alone.final_genotypes
    # the live snapshot (what `ostr-ray status` shows) is not rolled back by Tune's restored staging copy
    snapshot_seeds = LaunchDir(tmp_path / "resume").read_snapshot().variants["demo"].seeds
    assert {s.last_epoch for s in snapshot_seeds.values()} == {6}


@pytest.mark.parametrize(
    "seeds,match",
    [
        ("", "--seeds is empty"),
        ("0", "must be >= 1"),
        ("1,-2", "negative seed -2"),
        ("3,3", "duplicate seed 3"),
        ("a,b", "not a count"),
    ],
)
def test_bad_seeds(seeds, match):
    with pytest.raises(LaunchError, match=match):
        parse_seeds(seeds)


def test_seed_forms():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("3,7,11") == [3, 7, 11]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seeds", "1,1"], "duplicate seed 1"),
        (["--preset", "nope"], "unknown space or preset 'nope'"),
        (["--spaces", "nb201,nasnet"], "unknown space or preset 'nasnet'"),
        (["--gpus-per-trial", "0.25", "--epochs", "1"], "has no GPU"),
        (["--address", "127.0.0.1:1"], "cannot reach Ray at --address"),
        (["--data-dir", "/nonexistent", "--dataset", "imagefolder"], "/nonexistent does not exist"),
    ],
)
@pytest.mark.slow
def test_bad_launch_input_is_one_line_and_non_zero(tmp_path, args, message):
    result = _cli("launch", "--storage", str(tmp_path), *args, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_status_of_an_unfinished_launch_says_so_and_how_to_resume(tmp_path):
    from ostr_ray.experiment.layout import SNAPSHOT
    from ostr_ray.orchestration.status import launch_status

    (tmp_path / SNAPSHOT).write_text(json.dumps({"variants": {}, "updated_at": 1000.0}))
    status = launch_status(str(tmp_path), now=1042.0)
    assert status.state == "interrupted"
    assert "last sign of life 42 s ago" in status.stop_reason
    assert f"ostr-ray launch --resume {tmp_path}" in status.stop_reason
