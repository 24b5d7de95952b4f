"""``--seeds-per-trial``: seeds searched as one batched model per Ray Tune trial still reach the coordinator,
MLflow and the experiment directory seed by seed, with the genotypes of each seed searched alone, and a killed
group trial resumes exactly."""

from __future__ import annotations

import os
import signal

import pytest

from ostr_ray.core.config import build_config
from ostr_ray.core.search import Searcher, SeedGroupSearcher
from ostr_ray.experiment import SearchDir
from ostr_ray.orchestration.run import run_launch
from tests.conftest import tiny_overrides, tiny_spec


def _each_alone(seeds, epochs):
    """Each seed searched on its own, in this process: what a seed of a group trial must reproduce."""
    overrides = tiny_overrides(epochs=epochs, patience=0, threads=1)
    return {seed: Searcher(build_config("demo", {**overrides, "seed": seed})).run() for seed in seeds}


def _group(seeds, epochs):
    """The seeds searched as one group, undisturbed, in this process."""
    overrides = tiny_overrides(epochs=epochs, patience=0, threads=1)
    return SeedGroupSearcher.from_seeds(build_config("demo", overrides), seeds).run().results


def test_a_group_of_two_and_a_single_seed_report_seed_by_seed(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "groups", seeds="3", epochs=3, patience=0)
    spec.seeds_per_trial = 2  # trials: seeds (0, 1) batched, and seed 2 alone
    report = run_launch(spec)
    variant = report.variants["demo"]
    assert report.outcome == "finished" and sorted(variant.seeds) == [0, 1, 2]
    assert all(s.status == "finished" and s.last_epoch == 3 for s in variant.seeds.values())
    assert [h[0] for h in variant.history] == [1, 2, 3]
    alone = _each_alone([0, 1, 2], 3)
    for seed in (0, 1, 2):
        assert variant.seeds[seed].genotypes == alone[seed].final_genotypes
        record = SearchDir(tmp_path / "groups" / f"demo-seed{seed}").read_record()
        assert record.config["seed"] == seed and record.result.final_genotypes == alone[seed].final_genotypes
    assert set(report.mlflow.children) == {"demo/0", "demo/1", "demo/2"}  # one MLflow run per seed


@pytest.mark.slow
def test_a_killed_group_trial_is_retried_from_its_checkpoint_with_the_same_result(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "killgroup", seeds="2", epochs=4, patience=0)
    spec.seeds_per_trial = 2
    killed = {}

    class KillAtEpochTwo:
        def on_trial_report(self, key, report):
            if report.epoch == 2 and not killed:
                killed["pid"] = int((tmp_path / "killgroup" / "demo-seed0" / "worker.pid").read_text())
                os.kill(killed["pid"], signal.SIGKILL)

        def on_epoch_stats(self, stats):
            pass

    report = run_launch(spec, listeners=[KillAtEpochTwo()])
    assert killed, "the group trial was never killed"
    # the reference is the same group searched undisturbed: a resumed group is bit-identical to it, while a seed
    # searched alone may part from its group on a near-zero Adam step on some CPUs (test_seed_groups.py)
    undisturbed = _group([0, 1], 4)
    seeds = report.variants["demo"].seeds
    assert all(seeds[s].status == "finished" and seeds[s].last_epoch == 4 for s in (0, 1))
    assert {s: seeds[s].genotypes for s in (0, 1)} == {s: undisturbed[s].final_genotypes for s in (0, 1)}
