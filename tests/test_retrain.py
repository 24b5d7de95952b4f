"""``ostr-ray retrain``: network sizes against published figures, protocols, genotype resolution, the dry run,
bad input, and three real Ray Train runs (2 CPU workers): a retrain linked to its search in MLflow, its
``--resume``, and a worker SIGKILLed after epoch 1 that resumes from the checkpoint.

Size convention (stated by :func:`ostr_ray.retrain.measure_network`): parameters without the auxiliary head;
multiply-adds = torch FlopCounterMode FLOPs / 2 (convs + linears), batch 1, eval mode.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from typer.testing import CliRunner

from ostr_ray import retrain as rt
from ostr_ray.cli import app
from ostr_ray.retrain.worker import _Placement, _Shard
from ostr_ray.tracking.store import client as _mlflow_client
from searchspaces import get_space
from searchspaces.darts_genotype import DARTS_V2
from tests.conftest import as_set

BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
TINY = ["--dataset", "synthetic", "--set", "network.C=4", "--set", "network.N=1", "--set", "image_size=8"]
TINY_SET = {"network": {"C": 4, "N": 1}, "image_size": 8, "batch_size": 64, "eval_batch_size": 64}
runner = CliRunner()


def _size(space, genotype, protocol, **overrides):
    config = rt.build_retrain_config(protocol, overrides or None)
    classes = 1000 if config.network_kind == "imagenet" else 10
    return rt.measure_network(rt.build_network(space, genotype, config, classes), config.flops_resolution)


# ------------------------------------------------------------------------------------ published sizes


def test_darts_v2_cifar_size_matches_the_paper():
    size = _size("darts", DARTS_V2, "darts-cifar")
    assert size["params"] == 3_349_342  # DARTS paper: 3.3M (auxiliary head excluded)
    assert size["mult_adds"] == 528_359_040  # ~0.53G multiply-adds at 32x32
    assert size["flops_resolution"] == 32


def test_darts_v2_imagenet_size_matches_the_paper():
    size = _size("darts", DARTS_V2, "darts-imagenet")
    assert size["params"] == 4_718_752  # DARTS paper: 4.7M
    # The paper says 574M multiply-adds; torch's counter (convs + linears) gives 530M.
    assert size["mult_adds"] == 529_911_552
    assert 520e6 < size["mult_adds"] < 580e6 and size["flops_resolution"] == 224


def test_nb201_sizes_match_the_benchmark():
    # NB201's published extremes (all-3x3 cell: 1.5316M params / 220.11M FLOPs; all-none: 0.0733M / 7.78M;
    # the benchmark's "FLOPs" are multiply-adds) and its best CIFAR-10 cell (94.37%).
    assert _size("nb201", get_space("nb201").parse_genotype(ALL_CONV3), "nb201")["params"] == 1_531_546
    assert _size("nb201", get_space("nb201").parse_genotype(ALL_CONV3), "nb201")["mult_adds"] == 220_119_680
    assert _size("nb201", get_space("nb201").parse_genotype(ALL_NONE), "nb201")["mult_adds"] == 7_783_040
    best = _size("nb201", get_space("nb201").parse_genotype(BEST_NB201), "nb201")
    assert (best["params"], best["mult_adds"]) == (1_288_506, 184_730_240)


# ------------------------------------------------------------------------------------ protocols


def test_protocols_are_data_and_overridable():
    assert set(rt.list_protocols()) >= {"darts-cifar", "darts-imagenet", "nb201"}
    cifar = rt.build_retrain_config("darts-cifar")
    assert (cifar.network, cifar.epochs, cifar.batch_size, cifar.lr) == (
        {"C": 36, "layers": 20, "auxiliary": True},
        600,
        96,
        0.025,
    )
    assert (cifar.cutout, cifar.auxiliary_weight, cifar.drop_path_prob, cifar.grad_clip) == (16, 0.4, 0.2, 5.0)
    aug = rt.build_retrain_config("darts-cifar", rt.parse_set(["network.C=16"]), augment="randaugment")
    assert (aug.epochs, aug.augment, aug.network["C"], aug.network["layers"]) == (1200, "randaugment", 16, 20)
    assert rt.build_retrain_config("darts-cifar", {"epochs": 7}, augment="randaugment", epochs=3).epochs == 3
    imagenet = rt.build_retrain_config("darts-imagenet", {"batch_size": 256})
    assert rt.effective_lr(imagenet) == pytest.approx(0.125)  # linear scaling of 0.5 @ 1024
    assert [rt.lr_factor(imagenet, e) for e in (0, 4, 5)] == pytest.approx([0.2, 1.0, 1.0])
    assert rt.lr_factor(imagenet, 249) == pytest.approx(1 / 245)
    nb201 = rt.build_retrain_config("nb201")
    assert nb201.nesterov and nb201.weight_decay == 5e-4 and nb201.batch_size == 256 and nb201.epochs == 200
    assert rt.lr_factor(nb201, 100) == pytest.approx(0.5)
    with pytest.raises(rt.RetrainError, match="unknown retrain setting 'bogus'"):
        rt.build_retrain_config("nb201", {"bogus": 1})
    with pytest.raises(rt.RetrainError, match="unknown protocol 'nope'; choose from darts-cifar"):
        rt.build_retrain_config("nope")
    with pytest.raises(rt.RetrainError, match="--set 'epochs' is not key=value"):
        rt.parse_set(["epochs"])
    assert rt.parse_set(["network={C: 8}", "network.layers=3", "epochs=2"]) == {
        "network": {"C": 8, "layers": 3},
        "epochs": 2,
    }


def test_sharded_stream_is_a_distributed_sampler_partition():
    from ostr_ray.data import ImageData, load_images

    data = load_images("synthetic", size=103, image_size=8)
    data = ImageData(data.images, torch.arange(103), 103, [str(i) for i in range(103)], data.mean, data.std)

    def order(rank: int, world: int) -> list[int]:  # labels are image ids here
        stream = rt.shard_stream(data, 10 if world == 2 else 1, rank=rank, world_size=world, seed=3)
        return [int(i) for _, y in stream.epoch(4) for i in y]

    orders = [order(r, 2) for r in range(2)]
    assert len(orders[0]) == len(orders[1]) == 50  # 103 truncated to 102, 51 per rank, 5 full batches of 10
    assert not set(orders[0]) & set(orders[1])
    full = order(0, 1)
    assert orders[0] == full[0:100:2] and orders[1] == full[1:101:2]
    torch.manual_seed(0)
    rand = rt.shard_stream(data, 10, rank=1, world_size=2, seed=3, randaugment=True)
    x, y = next(iter(rand.epoch(4)))
    assert x.shape == (10, 3, 8, 8) and x.dtype == torch.float32 and y.tolist() == orders[1][:10]


def test_streamed_test_shards_count_every_image_once(tmp_path):
    # DistributedSampler pads 7 images to 8 for 2 ranks; the padded repeat must not be scored twice.
    from torchvision.io import write_png

    for split, count in (("train", 4), ("val", 7)):
        for i in range(count):
            folder = tmp_path / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            write_png(torch.full((3, 8, 8), 40 * i, dtype=torch.uint8), str(folder / f"{i}.png"))
    loop = {"dataset": "imagenet", "data_dir": str(tmp_path), "cpus_per_worker": 1}
    config = rt.build_retrain_config("darts-imagenet", {"image_size": 8, "eval_batch_size": 2, "loader_workers": 0})
    shards = [_Shard(loop, config, _Placement(rank, 2, torch.device("cpu"), False, False)) for rank in range(2)]
    seen = [[int(v) for _, y in shard.batches() for v in y] for shard in shards]
    assert len(seen[0]) + len(seen[1]) == 7 and sorted(seen[0] + seen[1]) == [0, 0, 0, 0, 1, 1, 1]


def test_retrain_dir_finds_the_newest_complete_checkpoint(tmp_path):
    from ostr_ray.experiment import RetrainCheckpoint, RetrainDir

    run = RetrainDir(tmp_path)
    assert run.latest_checkpoint() is None and run.spec_file == tmp_path / "retrain.json"
    for name, epochs in (("checkpoint_000000", [1]), ("checkpoint_000001", [1, 2])):
        (tmp_path / name).mkdir()
        RetrainCheckpoint(tmp_path / name).write_history([{"epoch": e} for e in epochs])
    (tmp_path / "checkpoint_000002").mkdir()  # still being written: no history yet
    latest = run.latest_checkpoint()
    assert latest.folder.name == "checkpoint_000001" and [h["epoch"] for h in latest.read_history()] == [1, 2]
    assert latest.state == tmp_path / "checkpoint_000001" / "state.pt"
    assert RetrainCheckpoint(tmp_path / "checkpoint_000002").read_history() == [] and rt.read_history(None) == []


def test_consensus_tag_of_one_or_several_variants():
    from ostr_ray.retrain.genotypes import _consensus_tag

    several = {"a/consensus_genotype": "ga", "b/consensus_genotype": "gb", "b/agreement": "1.0"}
    assert _consensus_tag(several, "b", "run") == "gb" and _consensus_tag(several, "c", "run") is None
    with pytest.raises(rt.RetrainError, match=r"variants \['a', 'b'\]; pick one with --variant"):
        _consensus_tag(several, None, "run")
    assert _consensus_tag({"a/consensus_genotype": "ga", "a/agreement": "0.5"}, None, "run") == "ga"
    assert _consensus_tag({"consensus_genotype": "g", "a/consensus_genotype": "ga"}, None, "run") == "g"


# ------------------------------------------------------------------------------------ genotypes


def test_resolve_genotype_from_text_files_and_dirs(tmp_path):
    space, genotype, source = rt.resolve_genotype(BEST_NB201)
    assert (space, genotype.to_str(), source["search_run_id"]) == ("nb201", BEST_NB201, None)
    assert rt.resolve_genotype(DARTS_V2.to_str())[1] == DARTS_V2
    assert rt.resolve_genotype(DARTS_V2.to_darts_repr())[1] == DARTS_V2
    (tmp_path / "g.json").write_text(json.dumps(DARTS_V2.to_json()))
    assert rt.resolve_genotype(str(tmp_path / "g.json"))[:2] == ("darts", DARTS_V2)
    (tmp_path / "genotypes.json").write_text(json.dumps({"ostr": BEST_NB201, "magnitude": ALL_CONV3}))
    assert rt.resolve_genotype(str(tmp_path / "genotypes.json"), criterion="magnitude")[1].to_str() == ALL_CONV3
    launch = tmp_path / "launch"
    launch.mkdir()
    from ostr_ray.core.summaries import SeedSummary, VariantSummary
    from ostr_ray.experiment import LaunchReport, LaunchSpec

    variant = VariantSummary(
        consensus_genotype=BEST_NB201,
        criterion_consensus={"magnitude": ALL_NONE},
        seeds={0: SeedSummary(genotypes={"ostr": ALL_CONV3, "magnitude": ALL_NONE})},
    )
    spec = LaunchSpec(variants={"nb201-cifar10": {"space": "nb201"}}, seeds=[0], name="launch", storage=str(tmp_path))
    report = LaunchReport(criterion="ostr", variants={"nb201-cifar10": variant}, launch=spec)
    (launch / "report.json").write_text(json.dumps(report.to_json()))
    runs = {"tracking_uri": "sqlite:///x.db", "parent_run_id": "p" * 32, "children": {"nb201-cifar10/0": "c" * 32}}
    (launch / "mlflow_runs.json").write_text(json.dumps(runs))
    _, genotype, source = rt.resolve_genotype(str(launch))
    assert genotype.to_str() == BEST_NB201
    assert source["search_run_id"] == source["parent_run_id"] == "p" * 32  # the launch run
    assert source["tracking_uri"] == "sqlite:///x.db"
    assert rt.resolve_genotype(str(launch), seed=0)[2]["search_run_id"] == "c" * 32
    assert rt.resolve_genotype(str(launch), seed=0)[1].to_str() == ALL_CONV3
    _, genotype, source = rt.resolve_genotype(str(launch), seed=0, criterion="magnitude")
    assert genotype.to_str() == ALL_NONE and source["kind"] == "launch" and source["seed"] == 0
    with pytest.raises(rt.RetrainError, match="no seed 3"):
        rt.resolve_genotype(str(launch), seed=3)


# ------------------------------------------------------------------------------------ CLI without Ray


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_dry_run_json_and_mobile_limit(tmp_path):
    result = runner.invoke(app, ["retrain", BEST_NB201, *TINY, "--dry-run", "--json", "--storage", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["space"], out["protocol"], out["network"]["C"], out["epochs"]) == ("nb201", "nb201", 4, 200)
    assert out["params"] == 20_294 and out["mult_adds"] > 0 and "FlopCounterMode" in out["flops_convention"]
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written
    darts = ["retrain", DARTS_V2.to_str(), "--dataset", "imagenet", "--dry-run", "--json"]
    out = json.loads(runner.invoke(app, darts).stdout)
    assert (out["protocol"], out["params"], out["mult_adds"]) == ("darts-imagenet", 4_718_752, 529_911_552)
    _one_line_error(runner.invoke(app, [*darts, "--set", "network.C=56"]), "600M", "--allow-large")
    assert runner.invoke(app, [*darts, "--set", "network.C=56", "--allow-large"]).exit_code == 0


def test_bad_input_is_one_line_before_training(tmp_path):
    _one_line_error(runner.invoke(app, ["retrain", "|nor_conv_3x3~0|+|bogus~0|", *TINY]), "cannot decode genotype")
    _one_line_error(runner.invoke(app, ["retrain", "N:sep3~0", *TINY]), "cannot decode genotype")
    not_a_tree = tmp_path / "flat"
    (not_a_tree / "train").mkdir(parents=True)
    (not_a_tree / "test").mkdir()
    (not_a_tree / "train" / "x.png").write_bytes(b"")
    args = ["retrain", BEST_NB201, "--dataset", "imagefolder", "--data-dir", str(not_a_tree)]
    _one_line_error(runner.invoke(app, args), "no class folders")
    _one_line_error(runner.invoke(app, [*args[:-1], str(tmp_path / "missing")]), "does not exist")
    _one_line_error(runner.invoke(app, ["retrain", DARTS_V2.to_str(), *TINY, "--protocol", "nb201"]), "nb201")
    # an MLflow run that holds no genotype
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _mlflow_client(uri)
    run = client.create_run(client.create_experiment("s", artifact_location=(tmp_path / "a").as_uri()))
    _one_line_error(runner.invoke(app, ["retrain", run.info.run_id, *TINY, "--tracking-uri", uri]), "no genotype")
    _one_line_error(runner.invoke(app, ["retrain", "0" * 32, *TINY, "--tracking-uri", uri]), "no MLflow run")


# ------------------------------------------------------------------------------------ Ray Train runs


def test_more_workers_or_gpus_than_the_cluster_is_refused(tmp_path, local_ray):
    base = ["retrain", BEST_NB201, *TINY, "--storage", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    _one_line_error(runner.invoke(app, [*base, "--workers", "4"]), "need 4 CPUs", "has 2")
    _one_line_error(runner.invoke(app, [*base, "--gpus-per-worker", "1"]), "GPU")
    client = _mlflow_client(f"sqlite:///{tmp_path}/m.db")
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # no run was made


@pytest.mark.slow
def test_two_worker_retrain_links_its_search_run_and_resumes(tmp_path, local_ray):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("search", artifact_location=(tmp_path / "artifacts").as_uri())
    launch_run = client.create_run(experiment, tags={"ostr.role": "parent", "consensus_genotype": ALL_CONV3})
    trial_tags = {"ostr.role": "trial", "ostr.seed": "1", "ostr.space": "nb201", "genotype.ostr": BEST_NB201}
    trial = client.create_run(experiment, tags={"mlflow.parentRunId": launch_run.info.run_id, **trial_tags})
    # the launch run: its consensus, or (--seed) its trial's genotype, as the tracking module tags them
    assert rt.resolve_genotype(launch_run.info.run_id, tracking_uri=uri)[1].to_str() == ALL_CONV3
    _, genotype, source = rt.resolve_genotype(launch_run.info.run_id, seed=1, tracking_uri=uri)
    assert genotype.to_str() == BEST_NB201 and source["search_run_id"] == trial.info.run_id
    args = ["retrain", trial.info.run_id, *TINY, "--set", "batch_size=64", "--workers", "2", "--epochs", "1"]
    args += ["--storage", str(tmp_path / "runs"), "--name", "tiny", "--tracking-uri", uri, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["epochs_done"] == 1 and out["genotype"] == BEST_NB201 and 0 <= out["test_top1"] <= 100
    run = client.get_run(out["mlflow_run_id"])
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and run.info.experiment_id == experiment
    assert tags["ostr.search_run_id"] == trial.info.run_id
    assert tags["mlflow.parentRunId"] == launch_run.info.run_id
    assert tags["ostr.genotype"] == BEST_NB201 and tags["ostr.protocol"] == "nb201"
    assert metrics["params_m"] == pytest.approx(0.020294) and metrics["mult_adds_m"] > 0
    assert metrics["test_top1"] == pytest.approx(out["test_top1"]) and "test_top5" in metrics
    assert run.data.params["workers"] == "2" and run.data.params["network.C"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]

    # --resume: one more epoch from the epoch-1 checkpoint, into the same MLflow run
    resumed = runner.invoke(app, ["retrain", "--resume", str(tmp_path / "runs" / "tiny"), "--epochs", "2", "--json"])
    assert resumed.exit_code == 0, resumed.output
    again = json.loads(resumed.stdout)
    assert again["mlflow_run_id"] == out["mlflow_run_id"]
    assert [(h["epoch"], h["resumed_from"]) for h in again["history"]] == [(1, 0), (2, 1)]
    assert again["history"][0] == out["history"][0]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_top1")]
    assert steps == [1, 2] and client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint(tmp_path, local_ray):
    spec = rt.prepare_retrain(
        rt.RetrainOptions(
            BEST_NB201,
            recipe=rt.RetrainRecipe(dataset="synthetic", protocol="nb201", epochs=3, set_=as_set(TINY_SET)),
            placement=rt.RetrainPlacement(
                workers=2,
                storage=str(tmp_path / "runs"),
                name="killed",
                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            ),
        )
    )
    pids = tmp_path / "pids"
    pids.mkdir()
    spec.debug = {"pid_dir": str(pids), "hold_after_epoch": 1}
    killed: dict[str, int] = {}

    def kill_rank1_after_epoch1():
        # Both ranks are parked after reporting epoch 1; wait until Ray Train has registered the checkpoint
        # (its manager snapshot is written then), so the restart must come back from epoch 1.
        snapshot = spec.run_dir / "checkpoint_manager_snapshot.json"
        deadline = time.time() + 240
        while time.time() < deadline:
            if (pids / "held0").exists() and (pids / "held1").exists() and snapshot.exists():
                killed["pid"] = int((pids / "worker1.pid").read_text())
                os.kill(killed["pid"], signal.SIGKILL)
                (pids / "release").write_text("")
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_rank1_after_epoch1, daemon=True)
    killer.start()
    result = rt.run_retrain(spec)
    killer.join(timeout=1)
    assert "pid" in killed
    assert int((pids / "worker1.pid").read_text()) != killed["pid"]  # a new worker took rank 1
    assert result["epochs_done"] == 3
    assert [(h["epoch"], h["resumed_from"]) for h in result["history"]] == [(1, 0), (2, 1), (3, 1)]
    client = _mlflow_client(spec.tracking_uri)
    assert [m.step for m in client.get_metric_history(result["mlflow_run_id"], "test_top1")] == [1, 2, 3]
    assert torch.isfinite(torch.tensor([h["train_loss"] for h in result["history"]])).all()
