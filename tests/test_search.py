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


def _arch_step(searcher: Searcher, *batch: torch.Tensor) -> None:
    """One architecture step of the seed's own search step, its strength sums written back to the seed."""
    step = searcher.step()
    step.arch_step(*(t.unsqueeze(0) for t in batch))
    step.write_back([searcher])


def test_strength_is_read_from_the_architecture_steps_own_gradient():
    searcher = _searcher()
    (x_train, y_train), (x_val, y_val) = next(searcher.data.train.epoch(0)), next(searcher.data.val.epoch(0))
    reference = copy.deepcopy(searcher.model)
    betas = {c: torch.softmax(a, -1) for c, a in reference.alphas.items()}
    for b in betas.values():
        b.retain_grad()
    F.cross_entropy(reference(x_val, betas), y_val).backward()
    _arch_step(searcher, x_train, y_train, x_val, y_val)
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
        ({"augment": "autoaugment"}, "unknown augment 'autoaugment'; choose from pad_crop, random_resized_crop"),
        ({"a_grad_clip": -1.0}, "a_grad_clip must be >= 0"),
        ({"w_lr_warmup_epochs": -1}, "w_lr_warmup_epochs must be >= 0"),
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


# ------------------------------------------------------------------ epochs over unequal halves
class _LabelledPasses:
    """A stand-in split of ``n`` batches whose batch ``b`` of pass ``p`` is the pair ``(p, b)``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def epoch(self, epoch: int, *, start_batch: int = 0):
        return ((epoch, b) for b in range(start_batch, self.n))


def test_val_position_is_global_batch_epoch_times_steps_plus_step():
    from itertools import islice

    from ostr_ray.core.search import val_batches

    val, steps = _LabelledPasses(6), 25
    for epoch in range(4):
        expected = [divmod(epoch * steps + t, 6) for t in range(steps)]  # g -> (pass g // V, batch g % V)
        assert list(islice(val_batches(val, epoch, steps), steps)) == expected
    # epoch 1 starts mid-pass (25 = 4 * 6 + 1) and wraps through passes 4..8
    assert list(islice(val_batches(val, 1, steps), 7)) == [(4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (5, 0), (5, 1)]
    # equal halves: epoch e reads exactly pass e, as the epoch zip of both halves did
    assert list(islice(val_batches(_LabelledPasses(5), 3, 5), 5)) == [(3, b) for b in range(5)]


def _unequal_split(tmp_path=None, **extra) -> Searcher:
    # synthetic 512 images, 0.8 / 0.2: 410 train, 102 val; batch 16 -> 25 weight steps, 6 val batches a pass
    return _searcher(tmp_path, train_size=None, val_size=None, train_fraction=0.8, **extra)


def test_an_epoch_is_one_pass_over_the_training_half_and_the_val_stream_wraps():
    searcher = _unequal_split(epochs=2)
    # The streams drop the last short batch (BatchStream(drop_last=True), as search_data builds them): every
    # step then reads a full batch, so each strength reading averages as many images as the others and a
    # batch of 1 never meets training-mode BatchNorm. So T = 410 // 16 = 25 (ceil would give 26).
    assert (len(searcher.data.train.labels), len(searcher.data.val.labels)) == (410, 102)
    assert (len(searcher.data.train), len(searcher.data.val)) == (410 // 16, 102 // 16) == (25, 6)
    searcher.run_epoch()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    step = searcher.step()
    train_step = step.train_step

    def recording_step(train_batch, val_batch, **kwargs):
        seen.append((val_batch[0][0], val_batch[1][0]))  # the seed's slice of the (K=1) stacked batch
        return train_step(train_batch, val_batch, **kwargs)

    step.train_step = recording_step
    searcher.run_epoch()
    assert len(seen) == 25 and searcher.accumulator.count == 25
    # epoch 1 reads global val batches 25..49: pass 4 from batch 1, passes 5-7, pass 8 batches 0-1
    passes = {p: list(searcher.data.val.epoch(p)) for p in range(4, 9)}
    expected = [passes[g // 6][g % 6] for g in range(25, 50)]
    for (x, y), (x_ref, y_ref) in zip(seen, expected):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_resume_mid_val_pass_is_bit_identical(tmp_path):
    # epochs end at global val batches 25 and 50, both mid-pass (V = 6); the warm-up spans the boundary too
    extra = dict(epochs=3, w_lr_warmup_epochs=2, a_grad_clip=0.05)
    straight = _unequal_split(**extra).run()
    interrupted = _unequal_split(tmp_path, **extra)
    interrupted.run_epoch()
    del interrupted  # "crash" after epoch 1, val stream at pass 4, batch 1
    resumed = Searcher.resume(tmp_path, out_dir=tmp_path).run()
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history):
        assert a.genotypes == b.genotypes and a.w_lr == b.w_lr
        np.testing.assert_array_equal(a.alphas["normal"], b.alphas["normal"])
        np.testing.assert_array_equal(a.scores["ostr"]["normal"], b.scores["ostr"]["normal"])


def test_linear_warm_up_then_the_cosine_schedule():
    plain = _searcher(epochs=4, w_lr=0.1, w_lr_min=0.0).run()
    warm = _searcher(epochs=4, w_lr=0.1, w_lr_min=0.0, w_lr_warmup_epochs=2).run()
    cosine = [r.w_lr for r in plain.history]
    assert cosine[0] == 0.1 and cosine[1] < 0.1
    # epochs 0 and 1 at 0.1 * 1/2 and 0.1 * 2/2 (PC-DARTS: base lr * (epoch + 1) / 5), then the cosine resumes
    assert [r.w_lr for r in warm.history] == [0.1 * 1 / 2, 0.1 * 2 / 2, cosine[2], cosine[3]]


def test_arch_gradient_clipping_bounds_the_update_not_the_strength():
    clipped, free = _searcher(a_grad_clip=1e-4), _searcher()
    (x_train, y_train), (x_val, y_val) = next(clipped.data.train.epoch(0)), next(clipped.data.val.epoch(0))
    for searcher in (clipped, free):
        _arch_step(searcher, x_train, y_train, x_val, y_val)
    grads = [p.grad for p in clipped.step().arch]
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) <= 1e-4 * (1 + 1e-5)
    unclipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in free.step().arch]))
    assert unclipped > 1e-3  # so the clip did bite
    torch.testing.assert_close(clipped.accumulator.summary().mean, free.accumulator.summary().mean)


def test_checkpoints_of_release_0_1_keep_their_fingerprint():
    """Settings added since (augment, warm-up, arch clipping) count only off their defaults, so a checkpoint
    written before they existed still resumes. The expected hash is release 0.1's formula on its own config."""
    import hashlib
    import json
    from pathlib import Path

    from ostr_ray.core.config import config_from_dict

    saved = json.loads((Path(__file__).parent / "fixtures/release-0.1/search/report.json").read_text())["config"]
    non_shaping = {"data_dir", "download", "patience", "min_epochs", "tie_se", "device", "threads"}
    non_shaping |= {"nb201_table", "description", "criterion"}
    shaping = {k: v for k, v in saved.items() if k not in non_shaping}
    release_hash = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert config_from_dict(saved).fingerprint() == release_hash
    assert config_from_dict({**saved, "a_grad_clip": 5.0}).fingerprint() != release_hash
