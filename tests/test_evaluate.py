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
            {"id": "cell0", "genotype": A, "credits": [{"group": "consensus", "label": "c"}], "size": {"params_m": 1}},
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
    assert (pair["a"], pair["b"], pair["diff"], pair["low"]) == ("consensus", "random", 15.0, None)


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
    assert {(p["a"], p["b"]) for p in report["pairs"]} >= {("consensus", "magnitude")}

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

    again = runner.invoke(app, args)  # one evaluation per launch: a second is refused
    assert again.exit_code == 2 and "--resume" in again.output

    shown = runner.invoke(app, ["report", str(launch), "--format", "markdown", "--no-write"])
    assert shown.exit_code == 0, shown.output
    assert "Retrained cells" in shown.output and "95% Welch t interval" in shown.output
    assert f"{cell0['top1_mean']:.2f} ± {cell0['top1_std']:.2f}" in shown.output
