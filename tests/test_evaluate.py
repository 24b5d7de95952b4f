"""``ostr-ray evaluate``: cell selection (selectors, random baselines, deduplication), the Welch interval, bad
input refused before Ray starts, and one real evaluation (Ray Tune + MLflow, 2 cells x 2 seeds x 2 epochs on
synthetic data) that ``ostr-ray report`` then shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ostr_ray.cli import app
from ostr_ray.evaluate.selection import (
    EvaluateError,
    LaunchCells,
    Selector,
    parse_selectors,
    random_cells,
    select_cells,
)
from ostr_ray.evidence.evaluation import summarise, welch_interval
from searchspaces import get_space
from searchspaces.darts_genotype import DARTS_V2
from tests.conftest import REPO, as_set

FIXTURE = REPO / "tests" / "fixtures" / "release-0.1" / "launch"
TINY_SET = {"network": {"C": 4, "N": 1}, "image_size": 8, "batch_size": 64, "eval_batch_size": 64}
TINY = ["--dataset", "synthetic", "--protocol", "nb201", *sum((["--set", s] for s in as_set(TINY_SET)), [])]
A = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
B = "|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|"
runner = CliRunner()


def _found(**kw) -> LaunchCells:
    values = dict(
        space="nb201",
        criterion="ostr",
        consensus=A,
        criterion_consensus={"magnitude": B, "ostr": A, "naive": None},
        seeds={0: {"ostr": A, "magnitude": B}, 1: {"ostr": B}},
    )
    return LaunchCells(**{**values, **kw})


def _launch(tmp_path: Path) -> Path:
    """A copy of release 0.1's finished launch (NB201, consensus A shared by ostr/ostr_star/naive, magnitude B)."""
    path = tmp_path / "launch"
    shutil.copytree(FIXTURE, path)
    (path / "mlflow_runs.json").unlink()  # its store is not part of the fixture
    return path


# ------------------------------------------------------------------------------------ selectors


def test_selectors_parse_combined_and_refuse_unknown_names():
    assert parse_selectors(["consensus,criteria", "random:3", "seeds"]) == [
        Selector("consensus"),
        Selector("criteria"),
        Selector("random", count=3),
        Selector("seeds"),
    ]
    assert parse_selectors(None) == [Selector("consensus"), Selector("criteria")]
    darts = DARTS_V2.to_str()  # holds commas, is one genotype
    assert parse_selectors([darts, A]) == [Selector("given", text=darts), Selector("given", text=A)]
    for bad, message in (("bogus", "unknown cell selector 'bogus'"), ("random:0", "K >= 1"), ("random:x", "K >= 1")):
        with pytest.raises(EvaluateError, match=message):
            parse_selectors([bad])
    with pytest.raises(EvaluateError, match="unknown cell selector 'nope'"):
        parse_selectors(["consensus,nope"])


def test_identical_cells_are_kept_once_and_credited_to_every_selector():
    notes: list[str] = []
    cells = select_cells(parse_selectors(["consensus,criteria,seeds", A]), _found(), notes=notes)
    assert [c.genotype.to_str() for c in cells] == [A, B]
    assert cells[0].groups == ["consensus", "ostr", "seeds", "given"]
    assert cells[1].groups == ["magnitude", "seeds"]
    assert [c.label for c in cells[1].credits] == ["magnitude consensus", "seed 1 (ostr)"]
    assert notes == ["criterion naive has no consensus cell"]
    with pytest.raises(EvaluateError, match="no cells"):
        select_cells([Selector("consensus")], _found(consensus=None))
    with pytest.raises(EvaluateError, match="not a nb201 genotype"):
        select_cells(parse_selectors([DARTS_V2.to_str()]), _found())


def test_random_cells_are_reproducible_distinct_and_respect_the_limit():
    nb201 = get_space("nb201")
    first = random_cells(nb201, 5, seed=7)
    assert [g.to_str() for g in first] == [g.to_str() for g in random_cells(nb201, 5, seed=7)]
    assert len(set(first)) == 5 and first != random_cells(nb201, 5, seed=8)
    assert all("none" not in g.to_str() for g in first)  # the default decoder never picks 'none'
    assert any("none" in g.to_str() for g in random_cells(nb201, 20, seed=0, decoder={"nb201_none": "include"}))
    darts = get_space("darts")
    no_pool = random_cells(darts, 2, seed=1, accept=lambda g: "pool" not in g.to_str())
    assert len(no_pool) == 2 and all("pool" not in g.to_str() for g in no_pool)
    with pytest.raises(EvaluateError, match="random:2: only 0"):
        random_cells(nb201, 2, seed=0, accept=lambda g: False)
    # random cells that coincide with a found cell are trained once, credited to both
    cells = select_cells(
        [Selector("random", count=3), Selector("given", text=first[1].to_str())], _found(), random_seed=7
    )
    assert len(cells) == 3 and cells[1].groups == ["random", "given"]


# ------------------------------------------------------------------------------------ the table's statistics


def test_welch_interval_matches_scipy_and_the_summary_pools_groups():
    from scipy.stats import ttest_ind

    a, b = [90.1, 91.3, 89.7, 90.8], [88.0, 89.9, 88.4]
    found = welch_interval(a, b)
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert found["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (found["low"], found["high"]) == pytest.approx((ci.low, ci.high))
    assert welch_interval([1.0], [2.0, 3.0])["low"] is None
    spec = {
        "cells": [
            {
                "id": "cell0",
                "genotype": A,
                "credits": [{"group": "consensus", "label": "c"}, {"group": "ostr", "label": "o"}],
                "size": {"params_m": 1},
            },
            {"id": "cell1", "genotype": B, "credits": [{"group": "random", "label": "r"}], "size": {"params_m": 2}},
        ]
    }
    runs = {
        "cell0-seed0": {"cell": "cell0", "status": "finished", "test_top1": 50.0},
        "cell0-seed1": {"cell": "cell0", "status": "finished", "test_top1": 60.0},
        "cell1-seed0": {"cell": "cell1", "status": "failed", "test_top1": 10.0},
        "cell1-seed1": {"cell": "cell1", "status": "finished", "test_top1": 40.0},
    }
    summary = summarise(spec, runs)
    assert [(c["top1_mean"], c["top1_std"], c["runs"]) for c in summary["cells"]] == [(55.0, 5.0, 2), (40.0, 0.0, 1)]
    (pair,) = summary["pairs"]
    assert (pair["a"], pair["b"], pair["diff"], pair["low"]) == ("consensus = ostr", "random", 15.0, None)
    from ostr_ray.evidence.figures import make_figures

    figures = make_figures({"variants": {}, "evaluation": {**summary, "protocol": "nb201"}})
    assert figures["evidence_evaluation_by_selector.png"].startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------ bad input (no Ray)


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_bad_input_is_refused_in_one_line_before_ray(tmp_path):
    launch = _launch(tmp_path)
    base = ["evaluate", str(launch), *TINY]
    _one_line_error(runner.invoke(app, [*base, "--seeds", "0"]), "--seeds must be >= 1")
    _one_line_error(runner.invoke(app, [*base, "--cells", "bogus"]), "unknown cell selector")
    _one_line_error(runner.invoke(app, [*base, "--protocol", "darts-cifar"]), "darts-cifar", "not 'nb201'")
    _one_line_error(runner.invoke(app, ["evaluate", str(tmp_path / "nope"), *TINY]), "no launch directory")
    empty = tmp_path / "empty"
    shutil.copytree(launch, empty)
    report = json.loads((empty / "report.json").read_text())
    for data in report["variants"].values():
        data["consensus_genotype"] = None
        data["criterion_consensus"] = {}
    (empty / "report.json").write_text(json.dumps(report))
    _one_line_error(runner.invoke(app, ["evaluate", str(empty), *TINY]), "no cells")
    assert not (launch / "evaluation").exists() and not (empty / "evaluation").exists()


def test_dry_run_lists_distinct_cells_and_runs(tmp_path):
    launch = _launch(tmp_path)
    args = ["evaluate", str(launch), *TINY, "--cells", "consensus,criteria,random:2", "--seeds", "2"]
    result = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    genotypes = [c["genotype"] for c in plan["cells"]]
    assert genotypes[:2] == [A, B] and len(set(genotypes)) == len(genotypes) == 4
    assert plan["cells"][0]["selectors"] == ["consensus", "ostr", "ostr_star", "naive"]
    assert [r["name"] for r in plan["runs"]][:3] == ["cell0-seed0", "cell0-seed1", "cell1-seed0"]
    assert all(c["size"]["params_m"] > 0 for c in plan["cells"])
    again = json.loads(runner.invoke(app, [*args, "--dry-run", "--json"]).stdout)
    assert [c["genotype"] for c in again["cells"]] == genotypes  # random:2 drawn again identically


def test_nb201_cells_carry_the_benchmark_accuracy(tmp_path, nb201_csv):
    from ostr_ray.core.nb201_bench import load_nb201_table
    from ostr_ray.evidence.evaluation import evaluation_tables

    args = ["evaluate", str(_launch(tmp_path)), *TINY, "--nb201-table", str(nb201_csv), "--dry-run", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    table = load_nb201_table(nb201_csv)
    assert [c["benchmark"] for c in plan["cells"]] == [table.lookup(A), table.lookup(B)]
    runs = {r["name"]: {**r, "status": "finished", "test_top1": 50.0} for r in plan["runs"]}
    _, header, rows, _ = evaluation_tables({**summarise(plan, runs), "seeds": plan["seeds"]})[0]
    assert header[-1] == "NB201 benchmark" and all(row[-1] != "-" for row in rows)


# ------------------------------------------------------------------------------------ the real path


@pytest.mark.slow
def test_two_cells_two_seeds_through_tune_and_mlflow(tmp_path, local_ray):
    from mlflow import MlflowClient

    from ostr_ray.experiment import LaunchDir, MlflowRunMap

    launch = _launch(tmp_path)
    uri = f"sqlite:///{launch / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("launch-v1", artifact_location=(launch / "mlartifacts").as_uri())
    parent = client.create_run(experiment, tags={"ostr.role": "parent"}).info.run_id
    LaunchDir(launch).write_runs(MlflowRunMap(uri, experiment, parent, {}, local_store=True))

    args = ["evaluate", str(launch), *TINY, "--epochs", "2", "--seeds", "2", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outcome"] == "finished" and len(report["runs"]) == 4  # consensus == ostr == ...: 2 cells
    assert all(r["epochs_done"] == 2 and 0 <= r["test_top1"] <= 100 for r in report["runs"].values())
    cell0 = report["cells"][0]
    assert cell0["selectors"] == ["consensus", "ostr", "ostr_star", "naive"] and cell0["runs"] == 2
    assert cell0["top1_mean"] == pytest.approx(np.mean(cell0["top1"]))
    # the groups that chose the same cell are one side of the comparison
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("consensus = ostr = ostr_star = naive", "magnitude")]

    evaluation_id = report["mlflow"]["evaluation_run_id"]
    evaluation = client.get_run(evaluation_id)
    assert evaluation.data.tags["mlflow.parentRunId"] == parent and evaluation.info.status == "FINISHED"
    assert evaluation.data.metrics["cell0/top1_mean"] == pytest.approx(cell0["top1_mean"])
    assert "cell1/top1_std" in evaluation.data.metrics
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{evaluation_id}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    child = next(c for c in children if c.data.tags["mlflow.runName"] == "cell0-seed1")
    assert child.data.tags["ostr.selectors"] == "consensus,ostr,ostr_star,naive"
    assert child.data.params["seed"] == "1" and child.data.metrics["params_m"] > 0
    assert [m.step for m in client.get_metric_history(child.info.run_id, "test_top1")] == [1, 2]
    for run in children:  # every (cell, seed) carries its cell's diagram
        (diagram,) = client.list_artifacts(run.info.run_id, "plots")
        assert diagram.path == "plots/cells.png" and diagram.file_size > 1000
    png = Path(client.download_artifacts(child.info.run_id, "plots/cells.png", str(tmp_path)))
    assert png.read_bytes().startswith(b"\x89PNG")

    again = runner.invoke(app, args)  # one evaluation per launch: a second is refused
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["evaluate", str(launch), "--resume", "--json"])  # nothing left: same result
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["runs"] == report["runs"]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "test_top1")] == [1, 2]
    assert client.get_run(evaluation_id).info.status == "FINISHED"

    shown = runner.invoke(app, ["report", str(launch), "--format", "markdown", "--no-write"])
    assert shown.exit_code == 0, shown.output
    assert "Retrained cells" in shown.output and "95% Welch t interval" in shown.output
    assert f"{cell0['top1_mean']:.2f} ± {cell0['top1_std']:.2f}" in shown.output


@pytest.mark.slow
def test_a_killed_run_is_retried_from_its_last_checkpoint(tmp_path, local_ray):
    import os
    import signal
    import threading
    import time

    from ostr_ray.evaluate.driver import run_evaluation
    from ostr_ray.evaluate.spec import EvaluateOptions, prepare_evaluation
    from ostr_ray.orchestration.status import evaluation_status
    from ostr_ray.retrain.options import RetrainRecipe

    launch = _launch(tmp_path)
    recipe = RetrainRecipe(dataset="synthetic", protocol="nb201", epochs=2, set_=as_set(TINY_SET))
    spec = prepare_evaluation(EvaluateOptions(str(launch), cells=["consensus"], seeds=1, recipe=recipe))
    pids = tmp_path / "pids"
    pids.mkdir()
    spec.debug = {"pid_dir": str(pids), "hold_after_epoch": 1}
    killed: dict[str, int] = {}

    def kill_after_epoch1():
        # the run is parked after reporting epoch 1; once the driver has logged that epoch (so Tune has the
        # checkpoint), kill the trial's process: Tune retries it from the epoch-1 checkpoint
        deadline = time.time() + 120
        while time.time() < deadline:
            if (pids / "held0").exists() and _logged_epochs(spec) == [1]:
                time.sleep(1.0)
                killed["status"] = evaluation_status(spec.launch_path)  # `ostr-ray status` while it runs
                killed["pid"] = int((pids / "worker0.pid").read_text())
                os.kill(killed["pid"], signal.SIGKILL)
                (pids / "release").write_text("")
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_epoch1, daemon=True)
    killer.start()
    report = run_evaluation(spec)
    killer.join(timeout=1)
    assert "pid" in killed and int((pids / "worker0.pid").read_text()) != killed["pid"]
    live = killed["status"]
    assert live.state == "live" and live.runs["cell0-seed0"]["status"] == "running"
    assert live.runs["cell0-seed0"]["epochs_done"] == 1 and "0 of 1 runs" in live.stop_reason
    assert evaluation_status(spec.launch_path).state == "finished"
    (run,) = report["runs"].values()
    assert report["outcome"] == "finished" and run["epochs_done"] == 2 and len(run["top1_by_epoch"]) == 2
    newest = sorted((launch / "evaluation" / "cell0-seed0").glob("checkpoint_*"))[-1]
    history = json.loads((newest / "history.json").read_text())
    assert [h["resumed_from"] for h in history] == [0, 1]  # epoch 2 trained after the retry, from epoch 1
    assert _logged_epochs(spec) == [1, 2]


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_and_trains_every_run_once(tmp_path, local_ray):
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    from ostr_ray.experiment.layout import EvaluationDir
    from ostr_ray.orchestration.status import evaluation_status

    launch = _launch(tmp_path)
    folder = EvaluationDir(launch)
    epochs = 4  # on 2048 images an epoch takes long enough that Ctrl-C lands mid-run
    args = ["evaluate", str(launch), *TINY, "--set", "train_subset=2048", "--cells", "consensus", "--seeds", "2"]
    args += ["--epochs", str(epochs)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "ostr_ray.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not folder.run_history("cell0", 0) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read()[-2000:]
    os.killpg(driver.pid, signal.SIGINT)  # a terminal's Ctrl-C, after the first run's first epoch
    assert driver.wait(timeout=120) == 130, driver.stderr.read()[-2000:]
    report = folder.read_report()
    assert report["outcome"] == "interrupted" and report["interrupted_by"] == "SIGINT"
    assert evaluation_status(str(launch)).state == "interrupted"
    before = {name: run["epochs_done"] for name, run in report["runs"].items()}
    # the first run had checkpointed an epoch (what the wait above saw; on a loaded machine the driver may be
    # interrupted before that epoch's result reaches it, so the report can say 0), and something was left to do
    assert folder.run_history("cell0", 0) and min(before.values()) < epochs

    resumed = runner.invoke(app, ["evaluate", str(launch), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    final = json.loads(resumed.stdout)
    assert final["outcome"] == "finished" and evaluation_status(str(launch)).state == "finished"
    assert sorted(final["runs"]) == ["cell0-seed0", "cell0-seed1"]  # every run once: no run duplicated or lost
    assert sorted(p.name for p in Path(folder.path).iterdir() if p.is_dir()) == ["cell0-seed0", "cell0-seed1"]
    client = MlflowClient(final["mlflow"]["tracking_uri"])
    evaluation_id = final["mlflow"]["evaluation_run_id"]
    assert evaluation_id == report["mlflow"]["evaluation_run_id"]  # the same MLflow runs continue
    children = client.search_runs(
        [final["mlflow"]["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{evaluation_id}'"
    )
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for name, run in final["runs"].items():
        assert run["status"] == "finished" and run["epochs_done"] == epochs and len(run["top1_by_epoch"]) == epochs
        history = folder.run_history(run["cell"], run["seed"])
        resumed_from = [h["resumed_from"] for h in history]
        # epochs after the interruption trained from the last checkpoint, not from scratch
        assert resumed_from[: before[name]] == [0] * before[name]
        assert all(start >= before[name] for start in resumed_from[before[name] :])
        steps = [m.step for m in client.get_metric_history(final["mlflow"]["runs"][name], "test_top1")]
        assert steps == list(range(1, epochs + 1))  # each epoch logged once, across the interruption


def _logged_epochs(spec) -> list[int]:
    from ostr_ray.tracking.store import client

    run_ids = spec.mlflow.get("runs") or {}
    if not run_ids or not spec.tracking_uri:
        return []
    return [m.step for m in client(spec.tracking_uri).get_metric_history(run_ids["cell0-seed0"], "test_top1")]


def test_a_run_larger_than_the_cluster_is_refused_and_leaves_nothing(tmp_path, local_ray):
    launch = _launch(tmp_path)
    result = runner.invoke(app, ["evaluate", str(launch), *TINY, "--cpus-per-run", "4"])
    _one_line_error(result, "need 4 CPUs")
    assert not (launch / "evaluation").exists()


@pytest.mark.slow
def test_asha_stops_trailing_runs_early_and_the_report_says_so(tmp_path, local_ray):
    from mlflow import MlflowClient

    launch = _launch(tmp_path)
    # one run at a time (2 CPUs each on the 2-CPU Ray), so ASHA sees the runs at its rung (epoch 1) in grid
    # order: magnitude's cell first (the better one after an epoch here), then the consensus cell's runs
    asha = ["--scheduler", "asha", "--grace-period", "1", "--reduction-factor", "2", "--cpus-per-run", "2"]
    args = ["evaluate", str(launch), *TINY, "--cells", "criteria", "--epochs", "2", "--seeds", "2", *asha, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    runs = report["runs"]
    stopped = {name: run for name, run in runs.items() if run["status"] == "stopped early"}
    assert report["outcome"] == "finished" and stopped, runs
    assert all(r["status"] == "finished" and r["epochs_done"] == 2 for n, r in runs.items() if n not in stopped)
    epoch1 = {name: run["top1_by_epoch"][0] for name, run in runs.items()}
    for name, run in stopped.items():  # stopped at ASHA's one rung (epoch 1) for trailing another run there
        assert run["stopped_at_epoch"] == run["epochs_done"] == 1 and len(run["top1_by_epoch"]) == 1
        assert any(value > epoch1[name] for other, value in epoch1.items() if other != name)
    for cell in report["cells"]:  # each mean is over the runs that trained every epoch, and says so
        finished = [r["test_top1"] for r in runs.values() if r["cell"] == cell["id"] and r["status"] == "finished"]
        assert cell["runs"] == len(finished) and cell["stopped_early"] == 2 - len(finished)
        assert cell["runs_planned"] == 2 and (not finished or cell["top1_mean"] == pytest.approx(np.mean(finished)))
    assert sorted(s["run"] for s in report["stopped"]) == sorted(stopped)

    client = MlflowClient(report["mlflow"]["tracking_uri"])
    name = next(iter(stopped))
    child = client.get_run(report["mlflow"]["runs"][name])
    assert child.data.tags["ostr.stopped_early_at"] == "1" and child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "test_top1")] == [1]
    assert client.get_run(report["mlflow"]["evaluation_run_id"]).data.params["scheduler"] == "asha"

    shown = runner.invoke(app, ["report", str(launch), "--format", "markdown", "--no-write"])
    assert shown.exit_code == 0, shown.output
    assert "Stopped early by ASHA (grace 1, reduction 2, on test_top1)" in shown.output
    assert f"| {name} | {stopped[name]['cell']} | {stopped[name]['seed']} | 1 of 2 |" in shown.output
    for cell in report["cells"]:  # the "runs" column: how many runs the mean is over, of how many
        text = f"{cell['runs']} of 2 ({cell['stopped_early']} stopped early)" if cell["stopped_early"] else "2"
        std = f"{cell['top1_std']:.2f}" if cell["runs"] else "-"
        assert f"{std} | {text} |" in shown.output


def test_asha_settings_are_checked_before_ray(tmp_path):
    launch = _launch(tmp_path)
    base = ["evaluate", str(launch), *TINY, "--epochs", "2"]
    _one_line_error(runner.invoke(app, [*base, "--scheduler", "hyperband"]), "--scheduler 'hyperband'")
    _one_line_error(runner.invoke(app, [*base, "--scheduler", "asha", "--grace-period", "2"]), "no rung")
    _one_line_error(runner.invoke(app, [*base, "--scheduler", "asha", "--reduction-factor", "1"]), "> 1")
    plan = json.loads(runner.invoke(app, [*base, "--scheduler", "asha", "--dry-run", "--json"]).stdout)
    assert plan["scheduler"] == {
        "name": "asha",
        "metric": "test_top1",
        "mode": "max",
        "time_attr": "epoch",
        "max_t": 2,
        "grace_period": 1,
        "reduction_factor": 4.0,
    }


# ------------------------------------------------------------------------------------ status


def test_status_reads_the_evaluation_state_from_its_records(tmp_path):
    import os
    import socket
    import time

    from ostr_ray.experiment.layout import EvaluationDir
    from ostr_ray.experiment.records import DriverRecord
    from ostr_ray.orchestration.status import evaluation_status, is_evaluation_path, launch_status

    launch = _launch(tmp_path)
    assert evaluation_status(str(launch)) is None and launch_status(str(launch)).evaluation is None
    folder = EvaluationDir(launch)
    folder.write_spec({"cells": [{"id": "cell0"}], "seeds": [0, 1], "config": {"epochs": 2}})
    checkpoint = Path(folder.run_dir("cell0", 0)) / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / "history.json").write_text(json.dumps([{"epoch": 1, "test_top1": 30.0}]))
    assert is_evaluation_path(folder.path) and not is_evaluation_path(str(launch))

    found = evaluation_status(str(launch))  # no driver, no report: it died before it ended
    assert found.state == "interrupted" and "--resume" in found.stop_reason
    assert found.counts() == {"running": 1, "pending": 1} and found.runs["cell0-seed0"]["epochs_done"] == 1

    now = time.time()
    folder.write_driver(DriverRecord(socket.gethostname(), os.getpid(), now, now))  # this process: alive
    found = evaluation_status(str(launch))
    assert found.state == "live" and "0 of 2 runs" in found.stop_reason
    assert launch_status(str(launch)).to_json()["evaluation"]["state"] == "live"

    folder.write_driver(DriverRecord(socket.gethostname(), os.getpid(), now, now, ended_at=now))
    runs = {
        "cell0-seed0": {"cell": "cell0", "seed": 0, "status": "finished", "epochs_done": 2, "test_top1": 40.0},
        "cell0-seed1": {"cell": "cell0", "seed": 1, "status": "stopped early", "epochs_done": 1, "stopped_at_epoch": 1},
    }
    for outcome in ("finished", "partial", "failed"):
        folder.write_report({"outcome": outcome, "stop_reason": f"it {outcome}", "runs": runs})
        found = evaluation_status(str(launch))
        assert (found.state, found.stop_reason) == (outcome, f"it {outcome}")
    folder.write_report({"outcome": "interrupted", "stop_reason": "SIGINT", "runs": runs})
    assert evaluation_status(str(launch)).state == "interrupted"

    folder.write_report({"outcome": "finished", "stop_reason": "all 2 runs finished", "runs": runs})
    result = runner.invoke(app, ["status", folder.path])  # ostr-ray status <launch>/evaluation
    assert result.exit_code == 0, result.output
    assert "cell0-seed1: stopped early at epoch 1  1/2 epochs" in result.output
    assert "state: finished (1 finished, 1 stopped early): all 2 runs finished" in result.output
    shown = json.loads(runner.invoke(app, ["status", folder.path, "--json"]).stdout)
    assert shown["state"] == "finished" and shown["runs"]["cell0-seed0"]["test_top1"] == 40.0
    on_the_launch = runner.invoke(app, ["status", str(launch)])
    assert on_the_launch.exit_code == 0 and f"evaluation: finished ({folder.path})" in on_the_launch.output
