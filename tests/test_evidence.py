"""Paper-style evidence (ostr_ray/evidence/) on hand-made launches with hand-computable answers.

The NB201 table is made so that accuracy is a known function of the ops: ``cifar10_test = 80 + sum over the six
edges of V[op]`` with V = none 0, skip 1, conv1x1 2, conv3x3 3, avg_pool 0.5, and ``cifar10_valid = test - 1``.
So on any edge the single-edge neighbourhood (skip, conv1, conv3, pool) has accuracies ranked 2, 3, 4, 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from ostr_ray import evidence as ev
from ostr_ray.core.consensus import modal_genotype
from ostr_ray.experiment import LaunchDir, LaunchReport, LaunchSpec, MlflowRunMap
from ostr_ray.experiment.layout import EVIDENCE_FIGURES, EVIDENCE_JSON, EVIDENCE_MARKDOWN, REPORT
from searchspaces.darts_genotype import DARTS_V1, DARTS_V2, PC_DARTS
from searchspaces.nb201_genotype import NB201Genotype
from tests.conftest import make_report

V = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 0.5}
SCORE_NAMES = ("ostr", "ostr_star", "naive")
VARIANT = "nb201-toy"


def acc(ops) -> float:
    return 80.0 + sum(V[o] for o in ops)


def nb(*ops: str) -> str:
    ops = ops * 6 if len(ops) == 1 else ops
    return NB201Genotype(tuple(ops)).to_str()


A = nb("nor_conv_3x3")  # 98
B = nb("nor_conv_1x1")  # 92
C = nb("skip_connect")  # 86: six parameter-free ops
D = nb("skip_connect", *["nor_conv_3x3"] * 5)  # 96: one parameter-free op


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "toy_nb201.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "arch", "cifar10_valid", "cifar10_test"])
        for g in NB201Genotype.all_genotypes():
            writer.writerow([g.code, g.to_str(), acc(g.ops) - 1.0, acc(g.ops)])
    return path


@pytest.fixture(scope="module")
def table(table_csv):
    from ostr_ray.core.nb201_bench import NB201Table

    return NB201Table.from_csv(table_csv)


def row_matrix(row, shape=(6, 5)) -> np.ndarray:
    """The same score row on every edge."""
    return np.tile(np.asarray(row, dtype=np.float64), (shape[0], 1))


def epoch_report(epoch, seed, genotypes, *, scores=None, betas=None, space="nb201", shape=(6, 5), stop=None):
    cells = ("normal",) if space == "nb201" else ("normal", "reduce")
    scores = {c: row_matrix([0.2] * shape[1], shape) if scores is None else scores for c in cells}
    betas = {c: row_matrix([1.0 / shape[1]] * shape[1], shape) if betas is None else betas for c in cells}
    return make_report(
        epoch,
        seed,
        genotypes,
        scores,
        space=space,
        betas=betas,
        epochs=4,
        arch_active=True,
        alphas={c: np.zeros(shape) for c in cells},
        epoch_seconds=10.0,
        images_per_s=100.0,
        stop_reason=stop,
    ).to_json()


def crits(mag: str, ostr: str) -> dict[str, str]:
    """ostr_star follows ostr and naive follows magnitude in these hand-made searches."""
    return {"magnitude": mag, "ostr": ostr, "ostr_star": ostr, "naive": mag}


# magnitude / ostr cells per epoch; seed 2 stops after epoch 2, seed 3 fails after epoch 1
PLAN = {
    0: ([C, C, C, C], [B, A, A, A]),
    1: ([C, C, D, C], [A, A, D, A]),
    2: ([B, C], [A, D]),
    3: ([A], [A]),
}
OSTR_ROWS = {0: [0.9, 0.1, 0.2, 0.3, 0.0], 1: [0.0, 0.3, 0.2, 0.1, 0.4], 2: [0.0, 0.1, 0.1, 0.3, 0.0]}
BETA_ROWS = {0: [0.2] * 5, 1: [0.1, 0.5, 0.1, 0.2, 0.1], 2: [0.1, 0.5, 0.1, 0.2, 0.1]}


def nb201_history():
    trials, seeds = [], {}
    for seed, (mags, ostrs) in PLAN.items():
        reports = []
        for i, (m, o) in enumerate(zip(mags, ostrs)):
            last = i == len(mags) - 1
            reports.append(
                epoch_report(
                    i + 1,
                    seed,
                    crits(m, o),
                    scores=row_matrix(OSTR_ROWS.get(seed, [0.2] * 5)),
                    betas=row_matrix(BETA_ROWS.get(seed, [0.2] * 5)),
                    stop="Algorithm 1: stable" if seed == 2 and last else None,
                )
            )
        status = {2: "stopped", 3: "failed"}.get(seed, "finished")
        reason = "boom" if seed == 3 else ""
        trials.append({"variant": VARIANT, "seed": seed, "status": status, "reason": reason, "reports": reports})
        seeds[str(seed)] = {
            "status": status,
            "reason": reason,
            "last_epoch": len(mags),
            "genotypes": crits(mags[-1], ostrs[-1]),
            "stop_reason": reports[-1]["stop_reason"],
        }
    report = {
        "name": "toy",
        "stop_reason": "every trial ended",
        "search_cost_trial_hours": 0.05,
        "variants": {
            VARIANT: {
                "seeds": seeds,
                "consensus_genotype": A,
                "agreement": 2 / 3,
                "criterion_consensus": {"magnitude": C, "ostr": A, "ostr_star": A, "naive": C},
            }
        },
    }
    return report, {"version": 1, "criterion": "ostr", "trials": trials, "stats": {}}


def launch_spec(path, variants, seeds=(0, 1, 2, 3)) -> LaunchSpec:
    """A launch spec of hand-made variant configs (only the settings the evidence reads)."""
    return LaunchSpec(variants=variants, seeds=list(seeds), name=path.name, storage=str(path.parent))


def write_experiment(path, report, history, variants=None):
    """A launch directory written through its records: the report as release 0.1 wrote it (a plain dict, no
    schema keys) or a :class:`LaunchReport`, the coordinator state, and a launch spec of ``variants``."""
    path.mkdir(parents=True, exist_ok=True)
    launch = LaunchDir(path)
    if isinstance(report, LaunchReport):
        launch.write_report(report)
    else:
        launch.storage.write_text(REPORT, json.dumps(report))
    if history is not None:
        launch.write_history(history)
    if variants is not None:
        launch.write_spec(launch_spec(path, variants))
    return path


@pytest.fixture
def nb201_dir(tmp_path, table_csv):
    report, history = nb201_history()
    variants = {VARIANT: {"space": "nb201", "nb201_table": str(table_csv)}}
    return write_experiment(tmp_path / "exp", report, history, variants)


@pytest.fixture
def nb201_evidence(nb201_dir):
    return ev.build_evidence(nb201_dir)


def by_crit(rows, crit):
    return next(r for r in rows if r["criterion"] == crit)


# ============================================================================ building blocks


def test_single_edge_neighbourhood_has_the_four_non_none_ops_including_the_cell_itself(table):
    for edge in range(6):
        hood = ev.single_edge_neighbourhood(D, edge)
        assert [op for op, _ in hood] == ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
        assert D in [c for _, c in hood]
        base = NB201Genotype.from_string(D).ops
        for op, cell in hood:
            ops = NB201Genotype.from_string(cell).ops
            assert ops[edge] == op
            assert [o for i, o in enumerate(ops) if i != edge] == [o for i, o in enumerate(base) if i != edge]
    # edge 0 of D holds skip; its neighbours' accuracies are 96, 97, 98, 95.5 in the table
    assert [table.lookup(c)["cifar10_test"] for _, c in ev.single_edge_neighbourhood(D, 0)] == [96, 97, 98, 95.5]
    with pytest.raises(ValueError):
        ev.single_edge_neighbourhood(D, 6)


def test_spearman_matches_scipy_and_is_nan_for_constant_input():
    for x, y in [
        ([0.1, 0.2, 0.3, 0.0], [1, 2, 3, 0.5]),
        ([0.5, 0.1, 0.2, 0.1], [2, 3, 4, 1]),
        ([3, 1, 2, 5], [4, 3, 1, 2]),
    ]:
        assert ev.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert ev.spearman([0.1, 0.2, 0.3, 0.0], [96, 97, 98, 95.5]) == pytest.approx(1.0)
    assert ev.spearman([0.3, 0.2, 0.1, 0.4], [96, 97, 98, 95.5]) == pytest.approx(-1.0)
    assert ev.spearman([0.1, 0.1, 0.3, 0.0], [94, 95, 96, 93.5]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(ev.spearman([0.2] * 4, [1, 2, 3, 4]))


def test_edge_correlations_ignore_the_none_column_and_use_the_neighbourhood_truth(table):
    truth = ev.GroundTruth(table=table)
    records = ev.edge_correlations(A, row_matrix([99.0, 0.1, 0.2, 0.3, 0.0]), truth, "cifar10_test")
    assert len(records) == 6
    assert all(r.rho == pytest.approx(1.0) for r in records)
    assert records[3].accuracies == [96, 97, 98, 95.5] and records[3].chosen == "nor_conv_3x3"
    assert all(r.chosen_is_best for r in records)
    # D's edge 0 keeps skip, which is not the best op there
    records = ev.edge_correlations(D, row_matrix([0, 0.1, 0.1, 0.3, 0]), truth, "cifar10_test")
    assert [r.chosen_is_best for r in records] == [False] + [True] * 5
    assert records[1].accuracies == [94, 95, 96, 93.5]


@pytest.mark.parametrize(
    ("space", "cell", "expected"),
    [
        ("nb201", C, {"normal": 6}),
        ("nb201", D, {"normal": 1}),
        ("nb201", nb("none", "avg_pool_3x3", "none", "nor_conv_3x3", "skip_connect", "none"), {"normal": 2}),
        ("darts", DARTS_V2.to_str(), {"normal": 2, "reduce": 8}),
        ("darts", DARTS_V1.to_str(), {"normal": 3, "reduce": 8}),
        ("pcdarts", PC_DARTS.to_str(), {"normal": 2, "reduce": 1}),
    ],
)
def test_parameter_free_op_counts(space, cell, expected):
    assert ev.count_param_free(space, cell) == expected
    assert "none" not in ev.parameter_free_set(space)


def test_mean_std_modal_pair_agreement():
    m, s = ev.mean_std([98, 98, 96, None, math.nan])
    assert m == pytest.approx(292 / 3) and s == pytest.approx(math.sqrt(8 / 9))
    assert all(math.isnan(v) for v in ev.mean_std([]))
    assert modal_genotype(["b", "a", "b", "a"]) == ("a", 0.5)
    assert ev.pair_agreement(["x", "x", "y"]) == pytest.approx(1 / 3)
    assert math.isnan(ev.pair_agreement(["x"]))


# ============================================================================ NB201 launch


def test_seeds_failed_left_out_and_primary_metric_is_the_test_column(nb201_evidence):
    data = nb201_evidence["variants"][VARIANT]
    assert data["seeds"] == [0, 1, 2]
    assert data["excluded"] == {"3": "failed: boom"}
    assert data["metrics"] == ["cifar10_valid", "cifar10_test"]
    assert data["metric"] == "cifar10_test"
    assert data["criteria"] == ["magnitude", "ostr", "ostr_star", "naive"]


def test_table_i_every_metric_consensus_cost_and_stop_epochs(nb201_evidence):
    table_i = nb201_evidence["variants"][VARIANT]["table_i"]
    ostr = by_crit(table_i, "ostr")
    assert ostr["n"] == 3
    assert ostr["metrics"]["cifar10_test"]["mean"] == pytest.approx(292 / 3)
    assert ostr["metrics"]["cifar10_test"]["std"] == pytest.approx(math.sqrt(8 / 9))
    assert ostr["metrics"]["cifar10_valid"]["mean"] == pytest.approx(292 / 3 - 1)
    assert ostr["metrics"]["cifar10_test"]["values"] == {"0": 98.0, "1": 98.0, "2": 96.0}
    assert ostr["consensus_cell"] == A and ostr["consensus"] == {"cifar10_valid": 97.0, "cifar10_test": 98.0}
    mag = by_crit(table_i, "magnitude")
    assert mag["metrics"]["cifar10_test"]["mean"] == 86.0 and mag["metrics"]["cifar10_test"]["std"] == 0.0
    # one variant: report.json's Tune total; the epochs' own time is 11 reports of 10 s (the failed seed's too)
    assert ostr["cost_trial_hours"] == 0.05
    assert nb201_evidence["variants"][VARIANT]["epoch_trial_hours"] == pytest.approx(110 / 3600)
    assert ostr["stop_epochs"] == {"0": 4, "1": 4, "2": 2}


def test_table_v_ablation(nb201_evidence):
    table_v = nb201_evidence["variants"][VARIANT]["table_v"]
    ostr = by_crit(table_v, "ostr")
    assert ostr["best"] == {"seed": 0, "value": 98.0}  # seeds 0 and 1 tie: the smaller seed
    assert ostr["worst"] == {"seed": 2, "value": 96.0}
    assert (ostr["n_consensus"], ostr["n_distinct"]) == (2, 2)
    assert ostr["pair_agreement"] == pytest.approx(1 / 3)
    assert ostr["agreement"] == pytest.approx(2 / 3)
    assert ostr["same_as_magnitude"] == 0
    mag = by_crit(table_v, "magnitude")
    assert (mag["n_consensus"], mag["n_distinct"], mag["pair_agreement"], mag["same_as_magnitude"]) == (3, 1, 1.0, 3)
    assert by_crit(table_v, "naive")["same_as_magnitude"] == 3


def test_table_vi_stability(nb201_evidence):
    rows = nb201_evidence["variants"][VARIANT]["stability"]
    mag = by_crit(rows, "magnitude")
    # seed 0 C,C,C,C; seed 1 C,C,D,C (2nd half D,C = 96,86); seed 2 B,C (2nd half C)
    assert mag["final_std"] == 0.0
    assert mag["late_std_per_seed"] == {"0": 0.0, "1": 5.0, "2": 0.0}
    assert mag["late_std"] == pytest.approx(5 / 3)
    assert mag["changes"]["values"] == {"0": 0, "1": 2, "2": 1}
    assert (mag["changes"]["mean"], mag["changes"]["std"]) == (pytest.approx(1.0), pytest.approx(math.sqrt(2 / 3)))
    assert mag["settled_epoch"]["values"] == {"0": 1, "1": 4, "2": 2}
    ostr = by_crit(rows, "ostr")
    assert ostr["final_std"] == pytest.approx(math.sqrt(8 / 9))
    assert ostr["late_std"] == pytest.approx(1 / 3)  # seed 1's 2nd half D,A = 96,98
    assert ostr["settled_epoch"]["values"] == {"0": 2, "1": 4, "2": 2}


def test_by_epoch_accuracy_and_param_free_curves_carry_stopped_seeds_forward(nb201_evidence):
    by_epoch = nb201_evidence["variants"][VARIANT]["by_epoch"]
    assert by_epoch["epochs"] == [1, 2, 3, 4]
    mag = by_epoch["accuracy"]["magnitude"]
    assert mag["mean"] == pytest.approx([88.0, 86.0, (86 + 96 + 86) / 3, 86.0])
    assert mag["std"][0] == pytest.approx(math.sqrt(8))
    assert mag["n"] == [3, 3, 3, 3]  # the failed seed is out, seed 2 keeps C after stopping
    pf = by_epoch["param_free"]["magnitude"]["normal"]
    assert pf["mean"] == pytest.approx([4.0, 6.0, 13 / 3, 6.0])
    assert by_epoch["param_free"]["ostr"]["normal"]["mean"] == pytest.approx([0.0, 1 / 3, 2 / 3, 1 / 3])


def test_spearman_summary_per_criterion(nb201_evidence):
    sp = nb201_evidence["variants"][VARIANT]["spearman"]
    assert sp["reference"] == "own final cell" and sp["metric"] == "cifar10_test"
    ostr = sp["criteria"]["ostr"]
    # seed 0: rho 1 on all six edges, seed 1: -1, seed 2 (ties in the scores): 4.5 / sqrt(22.5)
    tie = 4.5 / math.sqrt(22.5)
    assert ostr["n"] == 18 and ostr["n_undefined"] == 0
    assert ostr["mean"] == pytest.approx(tie / 3)
    assert ostr["std"] == pytest.approx(np.std([1] * 6 + [-1] * 6 + [tie] * 6))
    assert ostr["positive_share"] == pytest.approx(2 / 3)
    assert ostr["best_op_share"] == pytest.approx(17 / 18)
    assert ostr["per_edge"]["mean"] == pytest.approx([tie / 3] * 6)
    mag = sp["criteria"]["magnitude"]
    # seed 0's betas are uniform (no rho); seeds 1, 2 rank skip first on cell C: 1 / sqrt(22.5)
    assert (mag["n"], mag["n_undefined"]) == (12, 6)
    assert mag["mean"] == pytest.approx(1 / math.sqrt(22.5)) and mag["positive_share"] == 1.0


def test_without_a_table_the_recorded_truth_is_used_and_spearman_skipped(tmp_path):
    report, history = nb201_history()
    for trial in history["trials"]:
        for rep in trial["reports"]:
            rep["ground_truth"] = {
                c: {"cifar10_test": acc(NB201Genotype.from_string(g).ops)} for c, g in rep["genotypes"].items()
            }
    path = write_experiment(tmp_path / "norec", report, history, {VARIANT: {"space": "nb201"}})
    data = ev.build_evidence(path)["variants"][VARIANT]
    assert data["truth_source"] == "accuracies recorded by the launch"
    assert by_crit(data["table_i"], "ostr")["metrics"]["cifar10_test"]["mean"] == pytest.approx(292 / 3)
    assert "spearman" not in data


def test_table_path_from_launch_json_resolves_relative_to_the_experiment(tmp_path, table_csv):
    report, _ = nb201_history()
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "t.csv").write_bytes(table_csv.read_bytes())
    variants = {VARIANT: {"space": "nb201", "nb201_table": "../tables/t.csv"}}
    path = write_experiment(tmp_path / "runs" / "exp", report, None, variants)
    # launch.json keeps the path as typed at launch time (from the storage folder here)
    assert ev.resolve_table_path("../tables/t.csv", str(path)) == tmp_path / "runs" / "../tables/t.csv"
    assert ev.resolve_table_path("../nowhere.csv", str(path)) is None
    found = ev.build_evidence(path)
    data = found["variants"][VARIANT]
    assert data["truth_source"].endswith("t.csv")
    # no history: the final-cell tables come from report.json alone
    assert by_crit(data["table_i"], "ostr")["metrics"]["cifar10_test"]["mean"] == pytest.approx(292 / 3)
    assert not data["has_history"] and "by_epoch" not in data and "spearman" not in data
    assert any("history.json" in n for n in found["notes"])
    variants[VARIANT]["nb201_table"] = "../nowhere.csv"
    LaunchDir(path).write_spec(launch_spec(path, variants))
    found = ev.build_evidence(path)
    assert found["variants"][VARIANT]["truth_source"] is None
    assert any("nowhere.csv" in n for n in found["notes"])


def test_markdown_rendering_contains_the_expected_rows(nb201_evidence):
    text = ev.render_markdown(nb201_evidence)
    assert "**Table I: ground truth of the final cells (mean ± std over seeds)**" in text
    assert "| OStr | 3 | 96.33 ± 0.94 | 97.33 ± 0.94 | 97.00 | 98.00 | 0.050 | 4,4,2 |" in text
    assert "| DARTS (magnitude) | 86.00 ± 0.00 | 86.00 (s0) | 86.00 (s0) | 3/3 | 1 | 1.00 | 3/3 |" in text
    assert "| OStr | 97.33 ± 0.94 | 98.00 (s0) | 96.00 (s2) | 2/3 | 2 | 0.33 | 0/3 |" in text
    assert "| DARTS (magnitude) | 0.00 | 1.67 | 1.00 ± 0.82 | 2.3 ± 1.2 |" in text
    assert "| OStr | 0.32 ± 0.93 | 0.67 | 0.94 | 18 (+0 undefined) |" in text
    assert "- seed 3 left out: failed: boom" in text
    assert "| 1 | 88.00 ± 2.83 |" in text


def test_figures_written_as_png_with_markdown_and_json(nb201_evidence, nb201_dir):
    written = ev.write_outputs(nb201_evidence)
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert set(EVIDENCE_FIGURES.values()) | {EVIDENCE_MARKDOWN, EVIDENCE_JSON} <= names
    for name in EVIDENCE_FIGURES.values():
        data = (nb201_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000
    assert "![evidence_spearman](evidence_spearman.png)" in (nb201_dir / "evidence.md").read_text()
    saved = json.loads((nb201_dir / "evidence.json").read_text())
    assert saved["variants"][VARIANT]["table_v"][0]["criterion"] == "magnitude"


def test_mlflow_logging_only_with_a_run_mapping(nb201_dir, monkeypatch):
    from ostr_ray.tracking import runs

    logged = []

    def fake_log_files(tracking_uri, run_id, files, artifact_path):
        logged.extend((tracking_uri, run_id, f.rsplit("/", 1)[-1], artifact_path) for f in files)

    monkeypatch.setattr(runs, "log_files", fake_log_files)
    png = nb201_dir / "x.png"
    png.write_bytes(b"\x89PNG")
    assert ev.log_to_mlflow(str(nb201_dir), [str(png)]) is None and not logged
    launch = LaunchDir(nb201_dir)
    launch.write_runs(MlflowRunMap(tracking_uri="http://h:5000", parent_run_id="abc", children={"v/0": "c0"}))
    assert "abc" in ev.log_to_mlflow(str(nb201_dir), [str(png)])
    assert logged == [("http://h:5000", "abc", "x.png", "evidence")]
    # a map without a URI: the launch's own store, when it has one
    launch.write_runs(MlflowRunMap(parent_run_id="p1"))
    assert ev.mlflow_parent_run(str(nb201_dir)) == ("p1", None)
    (nb201_dir / "mlflow.db").write_bytes(b"")
    assert ev.mlflow_parent_run(str(nb201_dir)) == ("p1", launch.tracking_db_uri())

    def broken(*a, **k):
        raise ConnectionError("no server")

    monkeypatch.setattr(runs, "log_files", broken)
    assert ev.log_to_mlflow(str(nb201_dir), [str(png)]).startswith("MLflow logging skipped")


# ============================================================================ records and registries

FIXTURE_LAUNCH = Path(__file__).resolve().parent / "fixtures" / "release-0.1" / "launch"


def test_the_experiment_is_read_through_its_typed_records(nb201_dir):
    from ostr_ray.core.coordinator import Coordinator
    from ostr_ray.core.events import EpochReport

    exp = ev.load_experiment(nb201_dir)
    assert isinstance(exp.report, LaunchReport) and isinstance(exp.history, Coordinator)
    assert exp.spec is not None and exp.variant_config(VARIANT)["space"] == "nb201"
    runs = ev.collect_seeds(exp.report, exp.history, VARIANT)
    assert [r.seed for r in runs] == [0, 1, 2, 3]
    assert all(isinstance(rep, EpochReport) for run in runs for rep in run.reports)
    assert runs[3].status == "failed" and runs[3].reason == "boom"


def test_a_typed_report_gives_the_same_evidence_as_a_release_01_one(tmp_path, table_csv):
    report, history = nb201_history()
    variants = {VARIANT: {"space": "nb201", "nb201_table": str(table_csv)}}
    legacy = ev.build_evidence(write_experiment(tmp_path / "a", report, history, variants))
    typed = ev.build_evidence(write_experiment(tmp_path / "b", LaunchReport.from_json(report), history, variants))
    assert legacy.pop("experiment_path") != typed.pop("experiment_path")
    assert ev.to_json(typed) == ev.to_json(legacy)
    # the report travels in its record's JSON form
    assert ev.to_json({}, report=LaunchReport.from_json(report))["report"]["schema"] == "ostr-ray.launch-report"


def test_unreadable_experiments_fail_with_one_line(tmp_path):
    with pytest.raises(ev.EvidenceError, match="is the launch finished"):
        ev.load_experiment(tmp_path / "absent")
    report, history = nb201_history()
    path = write_experiment(tmp_path / "bad", report, {**history, "version": 99})
    with pytest.raises(ev.EvidenceError, match="coordinator history"):
        ev.load_experiment(path)


def test_release_01_launch_renders_its_evidence(tmp_path):
    path = tmp_path / "launch-v1"
    shutil.copytree(FIXTURE_LAUNCH, path)
    text = ev.render_markdown(ev.build_evidence(path))
    assert "## demo (nb201, 2 seeds)" in text and "- search cost (Tune, all trials): 0.001 trial-hours" in text
    assert "| DARTS (magnitude) | 0.50 | 0/2 | 2 | 0.00 | 2/2 |" in text
    assert "| OStr | 0.50 | 0/2 | 2 | 0.00 | 0/2 |" in text
    assert "| naive | - | - | 1.00 ± 0.00 | 2.0 ± 0.0 |" in text
    assert "- NB201 decoder: `nb201_none: exclude`" in text and "predates the setting" in text


def test_release_01_launch_against_the_shared_benchmark(tmp_path, nb201_csv):
    path = tmp_path / "launch-v1"
    shutil.copytree(FIXTURE_LAUNCH, path)
    text = ev.render_markdown(ev.build_evidence(path, nb201_table=nb201_csv))
    assert "| OStr | 2 | 91.76 ± 1.58 | 92.98 | 0.001 | 2,2 |" in text
    assert "| optimal | - | 94.37 | - | - |  |" in text
    assert "| DARTS (magnitude) | 85.38 ± 8.34 | 93.72 (s0) | 77.04 (s1) | 0/2 | 2 | 0.00 | 2/2 |" in text
    assert "| OStr | 0.10 ± 0.34 | 0.42 | 0.17 | 12 (+0 undefined) |" in text


def test_a_registered_criterion_gets_its_rows_label_and_scores(tmp_path, table_csv):
    from ostr_ray.core.criteria import Selection, register_criterion, unregister_criterion

    @register_criterion("anti_ostr", label="anti-OStr")
    def anti_ostr(state):
        """Minus the operation strength (a test criterion)."""
        return Selection(scores={cell: -m for cell, m in state.mean["ostr"].items()})

    try:
        report, history = nb201_history()
        # its cells follow ostr's in these hand-made searches; a criterion no longer registered rides along
        genotype_maps = [s["genotypes"] for s in report["variants"][VARIANT]["seeds"].values()]
        genotype_maps += [rep["genotypes"] for trial in history["trials"] for rep in trial["reports"]]
        for genotypes in genotype_maps:
            genotypes.update(anti_ostr=genotypes["ostr"], zz_retired=genotypes["magnitude"])
        variants = {VARIANT: {"space": "nb201", "nb201_table": str(table_csv)}}
        found = ev.build_evidence(write_experiment(tmp_path / "crit", report, history, variants))
        text = ev.render_markdown(found)
    finally:
        unregister_criterion("anti_ostr")
    data = found["variants"][VARIANT]
    assert data["criteria"] == ["magnitude", "ostr", "ostr_star", "naive", "anti_ostr", "zz_retired"]
    spear = data["spearman"]["criteria"]
    assert spear["anti_ostr"]["mean"] == pytest.approx(-spear["ostr"]["mean"])  # its own (negated) scores
    assert "zz_retired" not in spear  # nothing to re-apply for a criterion the registry no longer has
    assert "| anti-OStr | 3 | 96.33 ± 0.94 | 97.33 ± 0.94 | 97.00 | 98.00 | 0.050 | 4,4,2 |" in text
    assert "| zz_retired | 3 | 85.00 ± 0.00 |" in text


def test_without_a_baseline_criterion_the_darts_column_is_a_dash(nb201_dir, monkeypatch):
    import dataclasses

    from ostr_ray.core import criteria

    magnitude = criteria.criterion_info("magnitude")
    monkeypatch.setitem(criteria._CRITERIA, "magnitude", dataclasses.replace(magnitude, baseline=False))
    found = ev.build_evidence(nb201_dir)
    assert all(row["same_as_magnitude"] is None for row in found["variants"][VARIANT]["table_v"])
    text = ev.render_markdown(found)
    assert "| OStr | 97.33 ± 0.94 | 98.00 (s0) | 96.00 (s2) | 2/3 | 2 | 0.33 | - |" in text
    assert "the same seed's (no baseline criterion registered) cell" in text


def test_the_variant_space_comes_from_the_records_before_any_guess(tmp_path):
    report, history = nb201_history()
    exp = ev.load_experiment(write_experiment(tmp_path / "reports", report, history))
    assert exp.spec is None
    assert ev.variant_space(exp, VARIANT, ev.collect_seeds(exp.report, exp.history, VARIANT)) == "nb201"
    # the report's own record of the space comes before the launch spec's (and the spec the report carries
    # stands in for a missing launch spec)
    report["variants"][VARIANT]["space"] = "nb201"
    report["launch"] = launch_spec(tmp_path / "x", {VARIANT: {"space": "darts"}}).to_json()
    exp = ev.load_experiment(write_experiment(tmp_path / "summary", report, None))
    assert exp.variant_config(VARIANT) == {"space": "darts"}
    assert ev.variant_space(exp, VARIANT, ev.collect_seeds(exp.report, None, VARIANT)) == "nb201"
    # nothing says: the first registered space that parses the cells
    del report["variants"][VARIANT]["space"], report["launch"]
    exp = ev.load_experiment(write_experiment(tmp_path / "guess", report, None))
    assert ev.variant_space(exp, VARIANT, ev.collect_seeds(exp.report, None, VARIANT)) == "nb201"


def test_every_nb201_variant_names_its_decoder_convention(tmp_path, table_csv, nb201_evidence):
    assert nb201_evidence["variants"][VARIANT]["decoder"] == {"nb201_none": "exclude", "recorded": False}
    report, history = nb201_history()
    variants = {VARIANT: {"space": "nb201", "nb201_table": str(table_csv), "nb201_none": "include"}}
    found = ev.build_evidence(write_experiment(tmp_path / "include", report, history, variants))
    assert found["variants"][VARIANT]["decoder"] == {"nb201_none": "include", "recorded": True}
    text = ev.render_markdown(found)
    assert "- NB201 decoder: `nb201_none: include`, 'none' competes in the argmax (xautodl's DARTS baseline)\n" in text
    rich = _rich_text(ev.render_rich(found))
    assert "decoder: nb201_none=include" in rich


def _rich_text(renderable) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# ============================================================================ all six benchmark columns

SIX = ("cifar10_valid", "cifar10_test", "cifar100_valid", "cifar100_test", "imagenet16_valid", "imagenet16_test")
OFFSET = {
    "cifar10_valid": -1.0,
    "cifar10_test": 0.0,
    "cifar100_valid": -20.0,
    "cifar100_test": -20.5,
    "imagenet16_valid": -50.0,
    "imagenet16_test": -50.5,
}
"""Each column is ``acc(ops) + OFFSET``: the same ranking of cells, a known value per column."""


@pytest.fixture(scope="module")
def six_column_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("six") / "nb201_six.csv"
    columns = ["imagenet16_test", "cifar10_test", "cifar100_valid", "imagenet16_valid", "cifar10_valid"]
    columns += ["cifar100_test"]  # in no particular order: the report lays them out as the papers do
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", *columns])
        for g in NB201Genotype.all_genotypes():
            writer.writerow([g.to_str(), *[acc(g.ops) + OFFSET[c] for c in columns]])
    return path


def test_table_i_lays_out_the_six_benchmark_columns_as_the_papers(tmp_path, six_column_csv):
    report, history = nb201_history()
    variants = {VARIANT: {"space": "nb201", "nb201_table": str(six_column_csv)}}
    path = write_experiment(tmp_path / "six", report, history, variants)
    data = ev.build_evidence(path)["variants"][VARIANT]
    assert data["metrics"] == list(SIX) and data["metric"] == "cifar10_test"
    ostr = by_crit(data["table_i"], "ostr")
    for metric in SIX:
        assert ostr["metrics"][metric]["mean"] == pytest.approx(292 / 3 + OFFSET[metric])
        assert ostr["metrics"][metric]["std"] == pytest.approx(math.sqrt(8 / 9))
    assert data["optimal"] == {m: {"cell": A, "value": 98.0 + OFFSET[m]} for m in SIX}  # A: every edge conv3x3
    table_i = next(t for t in ev.variant_tables(data) if t.title.startswith("Table I"))
    assert table_i.header[:8] == ["criterion", "seeds", *SIX]
    assert table_i.header[8:14] == [f"consensus {m}" for m in SIX]
    row = next(r for r in table_i.rows if r[0] == "OStr")
    assert row[2:8] == ["96.33 ± 0.94", "97.33 ± 0.94", "77.33 ± 0.94", "76.83 ± 0.94", "47.33 ± 0.94", "46.83 ± 0.94"]
    assert table_i.rows[-1][:8] == ["optimal", "-", "97.00", "98.00", "78.00", "77.50", "48.00", "47.50"]
    other = ev.build_evidence(path, metric="imagenet16_test")["variants"][VARIANT]
    assert by_crit(other["table_v"], "ostr")["mean"] == pytest.approx(292 / 3 - 50.5)


# ============================================================================ DARTS launch


def darts_experiment(tmp_path):
    v1, v2, pc = DARTS_V1.to_str(), DARTS_V2.to_str(), PC_DARTS.to_str()
    plan = {0: [(v1, v2), (v2, v2)], 1: [(v1, pc), (v1, pc)]}  # (magnitude, ostr) per epoch
    trials, seeds = [], {}
    for seed, epochs in plan.items():
        reports = [
            epoch_report(i + 1, seed, crits(m, o), space="darts", shape=(14, 8)) for i, (m, o) in enumerate(epochs)
        ]
        trials.append({"variant": "darts-toy", "seed": seed, "status": "finished", "reason": "", "reports": reports})
        seeds[str(seed)] = {"status": "finished", "reason": "", "last_epoch": 2, "genotypes": crits(*epochs[-1])}
    report = {"name": "dtoy", "variants": {"darts-toy": {"seeds": seeds, "criterion_consensus": {}}}}
    history = {"version": 1, "criterion": "ostr", "trials": trials, "stats": {}}
    return write_experiment(tmp_path / "darts", report, history, {"darts-toy": {"space": "darts"}})


def test_darts_branch_structure_param_free_and_eval_cost(tmp_path):
    found = ev.build_evidence(darts_experiment(tmp_path), eval_size={"C": 8, "layers": 5})
    data = found["variants"]["darts-toy"]
    assert data["space"] == "darts" and data["metric"] is None and "table_i" not in data and "spearman" not in data
    assert by_crit(data["structure"], "magnitude")["agreement"] == 0.5  # V2 vs V1
    assert by_crit(data["structure"], "ostr")["n_distinct"] == 2
    assert data["param_free_final"]["ostr"]["normal"]["mean"] == pytest.approx(2.0)  # V2 2, PC 2
    assert data["param_free_final"]["ostr"]["reduce"]["mean"] == pytest.approx(4.5)  # V2 8, PC 1
    pf = data["by_epoch"]["param_free"]["magnitude"]
    assert pf["normal"]["mean"] == pytest.approx([3.0, 2.5]) and pf["reduce"]["mean"] == pytest.approx([8.0, 8.0])
    assert by_crit(data["stability"], "magnitude")["changes"]["values"] == {"0": 1, "1": 0}
    cost = data["eval_cost"]
    assert cost["size"] == {"C": 8, "layers": 5}
    v2 = ev.eval_cost("darts", DARTS_V2.to_str(), C=8, layers=5)
    assert v2["params_m"] == pytest.approx(0.037018) and v2["madds_m"] == pytest.approx(7.392512)
    assert cost["criteria"]["magnitude"]["params_m"]["values"]["0"] == pytest.approx(0.037018)
    text = ev.render_markdown(found)
    assert "Final cells: parameter-free ops, size" in text and "params (M)" in text
    assert "| DARTS (magnitude) | 0.50 | 1/2 | 2 | 0.00 | 2/2 |" in text


def test_darts_eval_cost_at_the_paper_size_excludes_the_aux_head():
    from searchspaces.darts_eval import build_eval_network, count_parameters

    cost = ev.eval_cost("darts", DARTS_V2.to_str())  # NetworkCIFAR C=36, 20 cells
    assert cost["params_m"] == pytest.approx(count_parameters(build_eval_network(DARTS_V2)) / 1e6)
    assert cost["params_m"] == pytest.approx(3.349342)  # DARTS V2: 3.3M in the DARTS paper
    assert cost["madds_m"] == pytest.approx(528.359, abs=0.01)


# ============================================================================ CLI


def test_cli_report_markdown_and_json(nb201_dir, table_csv):
    from typer.testing import CliRunner

    from ostr_ray.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["report", str(nb201_dir), "--nb201-table", str(table_csv), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Evidence: toy")
    assert "| OStr | 97.33 ± 0.94 | 98.00 (s0) | 96.00 (s2) | 2/3 | 2 | 0.33 | 0/3 |" in result.stdout
    assert (nb201_dir / "evidence.md").read_text() == result.stdout
    assert (nb201_dir / "evidence_accuracy_by_epoch.png").stat().st_size > 0
    result = runner.invoke(app, ["report", str(nb201_dir), "--json", "--no-write"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["report"]["name"] == "toy"
    assert payload["variants"][VARIANT]["spearman"]["criteria"]["ostr"]["n"] == 18
    bad = runner.invoke(app, ["report", str(nb201_dir), "--format", "html"])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["report", str(nb201_dir), "--nb201-table", str(nb201_dir / "nope.csv")])
    assert missing.exit_code == 2
    assert runner.invoke(app, ["report", str(nb201_dir), "--metric", "top5", "--no-write"]).exit_code == 2
    assert runner.invoke(app, ["report", str(nb201_dir / "absent")]).exit_code == 2
