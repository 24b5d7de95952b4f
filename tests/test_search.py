"""The search loop end to end on tiny supernets and synthetic data: strength read from the arch step,
determinism, resume equality, Algorithm 1, divergence and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ostr_ray.core.config import ConfigError, build_config
from ostr_ray.core.search import CheckpointError, Searcher, SearchError, read_checkpoint
from tests.conftest import tiny_overrides


def _searcher(tmp_path=None, **extra) -> Searcher:
    return Searcher(build_config(None, tiny_overrides(**extra)), out_dir=tmp_path)


def test_strength_is_read_from_the_architecture_steps_own_gradient():
    searcher = _searcher()
    (x_train, y_train), (x_val, y_val) = next(searcher.data.train.epoch(0)), next(searcher.data.val.epoch(0))
    reference = copy.deepcopy(searcher.model)
    betas = {c: torch.softmax(a, -1) for c, a in reference.alphas.items()}
    for b in betas.values():
        b.retain_grad()
    F.cross_entropy(reference(x_val, betas), y_val).backward()
    searcher._arch_step(x_train, y_train, x_val, y_val)
    summary = searcher.accumulator.summary()
    expected = reference.alphas["normal"].grad.abs().double()
    assert torch.allclose(summary.mean["ostr"]["normal"], expected, rtol=1e-5, atol=1e-9)
    expected_naive = (betas["normal"] * betas["normal"].grad).abs().double()
    assert torch.allclose(summary.mean["naive"]["normal"], expected_naive, rtol=1e-5, atol=1e-9)
    assert summary.minibatches == 1


def test_epoch_report_has_every_criterion_and_sane_numbers():
    result = _searcher(epochs=2).run()
    report = result.history[-1]
    assert set(report.genotypes) >= {"magnitude", "ostr", "ostr_star", "naive"}
    assert report.epoch == 2 and result.epochs_done == 2
    assert 0 <= report.train_acc <= 1 and np.isfinite(report.train_loss)
    assert report.scores["ostr"]["normal"].shape == (6, 5)
    assert (report.stderr["ostr"]["normal"] > 0).any()
    assert report.images_per_s > 0
    assert result.final_genotypes == report.genotypes
    assert result.stop_reason == "completed 2 epochs"


def test_same_seed_same_genotypes_and_alphas():
    first, second = _searcher(seed=3).run(), _searcher(seed=3).run()
    for a, b in zip(first.history, second.history):
        assert a.genotypes == b.genotypes
        np.testing.assert_array_equal(a.alphas["normal"], b.alphas["normal"])
        np.testing.assert_array_equal(a.scores["ostr"]["normal"], b.scores["ostr"]["normal"])
    other = _searcher(seed=4).run()
    assert not np.array_equal(other.history[-1].alphas["normal"], first.history[-1].alphas["normal"])


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    straight = _searcher(epochs=4).run()
    interrupted = _searcher(tmp_path, epochs=4)
    interrupted.run_epoch()
    interrupted.run_epoch()
    del interrupted  # "crash" after epoch 2
    resumed = Searcher.resume(tmp_path, out_dir=tmp_path).run()
    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a.genotypes == b.genotypes and a.stable_for == b.stable_for
        np.testing.assert_array_equal(a.alphas["normal"], b.alphas["normal"])
        np.testing.assert_array_equal(a.scores["ostr"]["normal"], b.scores["ostr"]["normal"])
        np.testing.assert_array_equal(a.stderr["naive"]["normal"], b.stderr["naive"]["normal"])


def test_resume_refuses_a_checkpoint_of_another_search(tmp_path):
    _searcher(tmp_path, epochs=1).run()
    other = build_config(None, tiny_overrides(epochs=1, space_kwargs={"C": 6, "N": 1}))
    with pytest.raises(CheckpointError, match="space_kwargs"):
        Searcher.resume(tmp_path, config=other)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing")


def test_algorithm_1_stops_once_the_genotype_held_for_patience_epochs():
    # With alpha frozen (lr ~ 0) the magnitude genotype never changes: stop after 1 + patience epochs.
    result = _searcher(epochs=10, a_lr=1e-12, criterion="magnitude", patience=2).run()
    assert result.epochs_done == 3
    assert "stable for 2 epochs" in result.stop_reason
    assert result.history[-1].stable_for["magnitude"] == 2


def test_min_epochs_delays_the_stop():
    result = _searcher(epochs=10, a_lr=1e-12, criterion="magnitude", patience=1, min_epochs=4).run()
    assert result.epochs_done == 4


def test_divergence_names_seed_epoch_and_step_and_keeps_checkpoints(tmp_path):
    searcher = _searcher(tmp_path, epochs=3, w_lr=1e30, grad_clip=1e30, seed=7)
    with pytest.raises(SearchError, match=r"seed 7: non-finite loss or gradient at epoch \d+, step \d+"):
        searcher.run()


def test_architecture_warm_up_reports_no_genotypes_then_starts():
    result = _searcher(epochs=3, arch_start_epoch=2).run()
    assert [bool(r.genotypes) for r in result.history] == [False, False, True]
    assert [r.arch_active for r in result.history] == [False, False, True]


@pytest.mark.parametrize("order", ["second", "single"])
def test_other_orders_run_and_read_strength(order):
    result = _searcher(epochs=1, order=order).run()
    assert (result.history[-1].scores["ostr"]["normal"] > 0).all()


def test_nb201_table_adds_ground_truth_per_epoch(nb201_csv):
    result = _searcher(epochs=1, nb201_table=str(nb201_csv)).run()
    truth = result.history[-1].ground_truth
    assert set(truth) >= {"magnitude", "ostr"}
    assert 10 < truth["ostr"]["cifar10_test"] < 95


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"space": "nasnet"}, "unknown search space 'nasnet'"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"criterion": "largest"}, "unknown criterion 'largest'"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"order": "third"}, "unknown order 'third'"),
        ({"bogus_key": 1}, "unknown setting 'bogus_key'"),
        ({"nb201_table": "x.csv", "space": "darts"}, "nb201_table applies to spaces with NAS-Bench-201 cells"),
    ],
)
def test_bad_settings_fail_before_any_work(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_config(None, tiny_overrides(**bad))


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*nb201-cifar10"):
        build_config("nope")


def test_every_preset_resolves():
    from ostr_ray.core.config import list_presets

    names = list_presets()
    assert {"nb201-cifar10", "darts-cifar10", "pcdarts-cifar10", "pcdarts-imagenet", "demo"} <= set(names)
    for name in names:
        assert build_config(name, {"data_dir": "/data"}).epochs >= 1


@pytest.mark.parametrize(
    "space,kwargs",
    [
        ("darts", {"C": 4, "layers": 3}),
        ("pcdarts", {"C": 8, "layers": 3, "partial_k": 4}),
    ],
)
def test_darts_like_spaces_search_both_cell_types(space, kwargs):
    result = _searcher(epochs=1, space=space, space_kwargs=kwargs, batch_size=8, train_size=16, val_size=16).run()
    report = result.history[-1]
    assert set(report.scores["ostr"]) == {"normal", "reduce"}
    assert report.scores["ostr"]["reduce"].shape == (14, 8)
    if space == "pcdarts":
        assert set(report.edge_weights) == {"normal", "reduce"}
