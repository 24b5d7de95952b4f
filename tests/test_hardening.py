"""What a launch says about itself is true, bad input never reaches Ray, and a user who is not watching is
served: exit codes and outcomes, one-line errors that leave nothing behind, one driver per launch directory,
status from the heartbeat, moved launch directories, plain lines off a terminal."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torchvision.io import write_jpeg
from typer.testing import CliRunner

from ostr_ray.cli import app
from ostr_ray.core.coordinator import TrialKey
from ostr_ray.experiment import LaunchDir, LaunchReport
from ostr_ray.orchestration.ownership import DriverLock
from ostr_ray.orchestration.spec import LaunchError
from ostr_ray.orchestration.status import launch_status
from tests.conftest import REPO, make_report, tiny_overrides, tiny_spec

runner = CliRunner()
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _sets(**extra) -> list[str]:
    args = []
    for key, value in tiny_overrides(**extra).items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


@pytest.fixture
def junk(tmp_path) -> dict[str, Path]:
    """Files that look like inputs but are not: a binary 'table', a cut-off checkpoint, bad launch records."""
    binary = tmp_path / "table.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "coordinator.json").write_text('{"variants": {"demo": {"seeds"')
    shape = tmp_path / "shape"
    shape.mkdir()
    (shape / "report.json").write_text(json.dumps({"variants": [1, 2, 3]}))
    (shape / "coordinator.json").write_text(json.dumps(["not", "a", "snapshot"]))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "report.json").write_text(json.dumps({"outcome": "done", "variants": {}}))
    afile = tmp_path / "afile"
    afile.write_text("x")
    tree = tmp_path / "tree"
    for i in range(8):
        folder = tree / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        write_jpeg(torch.full((3, 8, 8), 30 * i, dtype=torch.uint8), str(folder / f"{i}.jpg"))
    (tree / "train" / "c1" / "5.jpg").write_bytes((tree / "train" / "c1" / "5.jpg").read_bytes()[:40])  # truncated
    return {"binary": binary, "run": run, "cut": cut, "shape": shape, "afile": afile, "tree": tree, "odd": odd}


BAD_INPUT = [
    (["launch", *_sets(epochs="abc")], "setting epochs must be an integer, got 'abc'"),
    (["launch", *_sets(epochs=1.5)], "setting epochs must be an integer, got 1.5"),
    (["launch", "--set", "a_lr=.inf"], "setting a_lr must be a finite number"),
    (["launch", "--seeds", "100000"], "100000 trials; at most 1000"),
    (["launch", "--storage", "/proc/ostr"], "cannot write to --storage /proc/ostr"),
    (["launch", "--nb201-table", "{binary}"], "is not a CSV text file"),
    (["search", "--quiet", "--out", "{afile}"], "is a file, not a directory"),
    (["search", "--quiet", "--device", "cuda"], "has no CUDA GPU"),
    (["search", "--quiet", "--resume", "{run}"], "is it cut off?"),
    (["status", "{cut}"], "is not valid JSON"),
    (["status", "{shape}"], "coordinator.json is not a JSON object"),
    (["report", "{shape}"], "does not hold a launch summary"),
    (["status", "{odd}"], "unknown outcome 'done'"),
    (["nb201", "lookup", NB201_CELL, "--table", "{binary}"], "is not a CSV text file"),
    (["retrain", NB201_CELL, "--workers", "0"], "--workers must be >= 1, got 0"),
    (["launch", "--dataset", "imagefolder", "--data-dir", "/no/[/]/[red]x"], "/no/[/]/[red]x does not exist"),
    (["launch", "--dataset", "imagefolder", "--data-dir", "{tree}"], "cannot decode image"),
    (["search", "--quiet", "--dataset", "imagefolder", "--data-dir", "{tree}"], "cannot decode image"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[m[:40] for _, m in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_behind(tmp_path, junk, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    args = [str(junk[a[1:-1]]) if a[1:-1] in junk else a for a in args]
    if args[0] == "launch":
        args += ["--storage", str(tmp_path / "runs"), "--name", "bad"] if "--storage" not in args else ["--name", "bad"]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no launch dir, no mlflow.db, no ostr_runs


def test_a_second_driver_is_refused_with_the_holders_pid(tmp_path):
    launch = LaunchDir(tmp_path / "held")
    with DriverLock(launch), pytest.raises(LaunchError, match=f"PID {os.getpid()}"):
        DriverLock(LaunchDir(tmp_path / "held")).acquire()
    with DriverLock(launch):  # released: the next driver takes it
        pass


def _ended_launch(path: Path, outcome: str) -> LaunchDir:
    spec = tiny_spec(path.parent, path.name, seeds="1")
    launch = LaunchDir(path)
    launch.write_spec(spec)
    launch.write_report(LaunchReport(name=path.name, outcome=outcome, stop_reason="every trial ended", launch=spec))
    return launch


@pytest.mark.parametrize("outcome,words", [("finished", "already ended (finished)"), ("interrupted", "is unfinished")])
def test_reusing_a_launch_name_needs_resume_or_overwrite(tmp_path, monkeypatch, outcome, words):
    monkeypatch.chdir(tmp_path)
    _ended_launch(tmp_path / "runs" / "again", outcome)
    result = runner.invoke(app, ["launch", "--storage", str(tmp_path / "runs"), "--name", "again", *_sets()])
    assert result.exit_code == 2 and words in result.output and "--resume" in result.output, result.output
    from ostr_ray.orchestration.preflight import check_new_launch

    check_new_launch(LaunchDir(tmp_path / "runs" / "again"), overwrite=True)
    assert not (tmp_path / "runs" / "again").exists()


def test_status_from_the_heartbeat(tmp_path):
    launch = _ended_launch(tmp_path / "st", "interrupted")
    (tmp_path / "st" / "report.json").unlink()
    with DriverLock(launch):
        assert launch_status(launch.path).state == "starting"  # live, before the first summarised epoch
        launch.write_snapshot(_summary_with_one_epoch())
        found = launch_status(launch.path)
        assert found.state == "live" and f"PID {os.getpid()}" in found.stop_reason
    found = launch_status(launch.path)
    assert found.state == "interrupted" and f"--resume {launch.path}" in found.stop_reason
    record = launch.read_driver()
    record.ended_at, record.pid = None, 2**22 + 17  # a driver killed with -9: no end stamp, process gone
    launch.write_driver(record)
    assert launch_status(launch.path).state == "interrupted"
    report = LaunchReport(name="st", outcome="partial", stop_reason="every trial ended; 1 trial(s) failed")
    launch.write_report(report)
    assert launch_status(launch.path).state == "partial"


def _summary_with_one_epoch():
    import numpy as np

    from ostr_ray.core.coordinator import Coordinator

    coordinator = Coordinator()
    scores = {"normal": np.eye(6, 5)}
    coordinator.update(TrialKey("demo", 0), make_report(1, 0, {"ostr": NB201_CELL}, scores))
    return coordinator.summary()


def test_a_moved_launch_directory_keeps_its_report_and_mlflow_record(tmp_path):
    from mlflow import MlflowClient

    from ostr_ray.evidence import build_evidence
    from ostr_ray.tracking.recorder import LaunchRecorder
    from ostr_ray.tracking.store import ui_backend_uri
    from tests.test_tracking import fake_report

    spec = tiny_spec(tmp_path / "old", "moving", seeds="1")
    recorder = LaunchRecorder.from_spec(spec)
    recorder.start(spec)
    recorder.on_trial_report(TrialKey("demo", 0), fake_report("nb201", 0, 1, epochs=1))
    summary = _summary_with_one_epoch()
    report = LaunchReport(**vars(summary), name="moving", stop_reason="every trial ended", launch=spec)
    recorder.finish(report)
    launch = LaunchDir(spec.experiment_path)
    launch.write_spec(spec)
    report.mlflow = recorder.describe()
    launch.write_report(report)

    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    moved = tmp_path / "new" / "moving"
    assert LaunchDir(moved).read_report().experiment_path == str(moved)
    uri = ui_backend_uri(str(moved))
    assert uri == f"sqlite:///{moved / 'mlflow.db'}"
    assert not (tmp_path / "old").exists()  # no empty mlflow.db appears where the launch used to be
    client = MlflowClient(tracking_uri=uri)
    child = recorder.describe().children["demo/0"]
    local = client.download_artifacts(child, "genotypes.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())
    assert build_evidence(str(moved))["experiment_path"] == str(moved)


def test_off_a_terminal_every_seed_epoch_and_decision_is_one_flushed_line():
    import numpy as np

    from ostr_ray.console.live import LaunchView

    out = io.StringIO()
    view = LaunchView("ostr", console=Console(file=out, force_terminal=False, width=200))
    assert view.quiet and view.live is None  # not a terminal: no live table
    scores = {"normal": np.eye(6, 5)}
    for epoch in (1, 2):
        for seed in (0, 1):
            view.on_trial_report(TrialKey("demo", seed), make_report(epoch, seed, {"ostr": NB201_CELL}, scores))
    view.on_trial_finished(TrialKey("demo", 1), "failed", "non-finite loss")
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[0].startswith("demo seed 0 epoch 1/10") and "c3x3" in lines[0]
    assert lines[-1] == "demo seed 1 failed: non-finite loss"


def test_ui_on_a_busy_port_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        result = runner.invoke(app, ["ui", str(tmp_path), "--port", str(taken.getsockname()[1])])
    assert result.exit_code == 2 and "is in use" in result.output


def test_retrain_dry_run_needs_no_data_on_disk(tmp_path):
    result = runner.invoke(app, ["retrain", NB201_CELL, "--dry-run", "--data-dir", str(tmp_path / "absent"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params_m"] == pytest.approx(1.2885, abs=1e-3)


# ---------------------------------------------------------------------------------------------- real launches
def _launch(tmp_path, name, *extra, env=None, **sets):
    args = [sys.executable, "-m", "ostr_ray.cli", "launch", "--preset", "demo", "--storage", str(tmp_path)]
    args += ["--name", name, "--quiet", *extra, *_sets(**sets)]
    return subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )


def _wait_for_epoch(path: Path, epoch: int, process, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
        try:
            history = json.loads((path / "coordinator.json").read_text())["variants"]["demo"]["history"]
        except (OSError, ValueError, KeyError):
            continue
        if len(history) >= epoch:
            return
    ended = "" if process.poll() is None else f" (it exited {process.returncode}: {process.stderr.read()[-2000:]})"
    pytest.fail(f"the launch never reached epoch {epoch}{ended}")


EPOCHS = 12
"""Long enough that the launch is still running when the test interrupts it: the signal follows the epoch-2
consensus within a poll (half a second), and 10 more epochs take a few seconds even on a fast machine."""


def _wait_for_driver(path: Path, process, timeout: float = 120) -> None:
    """Until the launch's driver holds its directory and has written its spec (once Ray is up)."""
    from ostr_ray.experiment.layout import LAUNCH_SPEC

    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not (path / LAUNCH_SPEC).is_file():
        time.sleep(0.2)
    if not (path / LAUNCH_SPEC).is_file():
        pytest.fail(f"the launch never wrote {path / LAUNCH_SPEC} (exit {process.poll()})")


def _to_the_terminal(pid: int, signum: int) -> None:
    os.killpg(pid, signum)  # what a terminal's Ctrl-C does: the driver's whole process group


def _to_the_driver(pid: int, signum: int) -> None:
    os.kill(pid, signum)  # what `kill PID`, a scheduler or a service manager's stop does


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum,send,code,resume",
    [(signal.SIGINT, _to_the_terminal, 130, True), (signal.SIGTERM, _to_the_driver, 143, False)],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupted_launch_exits_128_plus_the_signal_and_resume_finishes_as_undisturbed(
    tmp_path, signum, send, code, resume
):
    from mlflow import MlflowClient

    from ostr_ray.core.config import build_config
    from ostr_ray.core.search import Searcher

    name = signum.name.lower()
    driver = _launch(tmp_path, name, "--seeds", "2", epochs=EPOCHS, patience=0)
    if resume:  # a second driver on the same name is refused (once is enough: it does not depend on the signal)
        _wait_for_driver(tmp_path / name, driver)
        second = _launch(tmp_path, name, "--seeds", "2", epochs=EPOCHS, patience=0)
        assert second.wait(timeout=120) == 2 and "being driven right now" in second.stderr.read()
    _wait_for_epoch(tmp_path / name, 2, driver)
    send(driver.pid, signum)
    assert driver.wait(timeout=180) == code, driver.stderr.read()[-2000:]
    report = LaunchDir(tmp_path / name).read_report()
    assert report.outcome == "interrupted" and report.interrupted_by == signum.name
    assert f"--resume {tmp_path / name}" in report.stop_reason
    assert launch_status(str(tmp_path / name)).state == "interrupted"
    parent = MlflowClient(tracking_uri=report.mlflow.tracking_uri).get_run(report.mlflow.parent_run_id)
    assert parent.info.status == "KILLED"
    if not resume:
        return  # the resume reads what Tune saved on its graceful stop, whichever signal asked for it: once is enough
    done = subprocess.run(
        [sys.executable, "-m", "ostr_ray.cli", "launch", "--resume", str(tmp_path / name), "--quiet", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads(done.stdout)
    assert resumed["outcome"] == "finished"
    alone = Searcher(build_config("demo", tiny_overrides(seed=1, epochs=EPOCHS, patience=0, threads=1))).run()
    assert resumed["variants"]["demo"]["seeds"]["1"]["genotypes"] == alone.final_genotypes
    # the MLflow record continues too: the same parent run, FINISHED, each epoch's values once in each child
    from tests.test_tracking import _check_run_tree

    assert resumed["mlflow"]["parent_run_id"] == report.mlflow.parent_run_id
    client = MlflowClient(tracking_uri=report.mlflow.tracking_uri)
    parent, children = _check_run_tree(client, name, [0, 1], EPOCHS, tmp_path)
    assert parent.info.run_id == report.mlflow.parent_run_id and len(children) == 2


@pytest.mark.slow
def test_all_trials_failing_exits_1_with_a_failed_report_and_parent_run(tmp_path):
    from mlflow import MlflowClient

    done = _launch(tmp_path, "allfail", "--seeds", "2", epochs=2, w_lr=1e30, grad_clip=1e30)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 1, err[-2000:]
    report = LaunchDir(tmp_path / "allfail").read_report()
    assert report.outcome == "failed" and set(report.failures) == {"demo/0", "demo/1"}
    assert all("non-finite" in why for why in report.failures.values())
    assert err.count("failed: demo/") == 2 and "Traceback" not in err
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'allfail' / 'mlflow.db'}")
    parent = client.get_run(report.mlflow.parent_run_id)
    assert parent.info.status == "FAILED"


@pytest.mark.slow
def test_an_oom_killed_trial_is_a_trial_failure_not_a_driver_crash(tmp_path):
    env = {**os.environ, "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100"}
    done = _launch(tmp_path, "oom", "--seeds", "1", "--max-failures", "1", env=env, epochs=2)
    out, err = done.communicate(timeout=300)
    assert done.returncode in (1, 3), err[-2000:]
    assert "out of memory" in err and "Traceback" not in err
    report = LaunchDir(tmp_path / "oom").read_report()
    assert report.outcome == "failed" and "memory monitor" in report.failures["demo/0"]
