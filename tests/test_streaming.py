"""The streamed data path on a generated JPEG tree: determinism of order and pixels, resume, worker counts,
and the search's choice between streaming and decoding into memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_jpeg

from ostr_ray import data as D
from ostr_ray.core import search_data
from ostr_ray.core.config import ConfigError, build_config
from ostr_ray.data import DataError, StreamedBatchStream, decode
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

SIZES = [(20, 24), (28, 20), (24, 24), (18, 30)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTR_RAY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 8 JPEGs of assorted sizes, smooth content (so crops differ visibly)."""
    root = tmp_path_factory.mktemp("jpegs") / "tree"
    g = torch.Generator().manual_seed(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(8):
            h, w = SIZES[(c + i) % len(SIZES)]
            coarse = torch.rand(1, 3, 4, 4, generator=g)
            img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0]
            write_jpeg(img.mul(255).to(torch.uint8), str(root / f"class{c}" / f"{i:02d}.jpg"), quality=95)
    return root


def _stream(tree: Path, **kw: object) -> StreamedBatchStream:
    values = dict(batch_size=5, seed=0, image_size=12)
    values.update(kw)
    return StreamedBatchStream(D.scan_split(tree, train=True), **values)


def _epoch(stream: StreamedBatchStream, epoch: int, **kw: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(stream.epoch(epoch, **kw))


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, x2) and torch.equal(y, y2) for (x, y), (x2, y2) in zip(a, b))


# ------------------------------------------------------------------------------------------ the stream


def test_streamed_batches_are_a_function_of_seed_and_epoch(tree: Path) -> None:
    stream = _stream(tree)
    assert len(stream) == 4  # 24 files, batch 5, drop_last
    first = _epoch(stream, 1)
    x, y = first[0]
    assert x.shape == (5, 3, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert _same(first, _epoch(_stream(tree), 1))  # order AND pixels replay
    other_seed = _epoch(_stream(tree, seed=1), 1)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other_seed]))
    assert not torch.equal(first[0][0], other_seed[0][0])
    other_epoch = _epoch(stream, 2)
    assert not torch.equal(torch.cat([x for x, _ in first]), torch.cat([x for x, _ in other_epoch]))
    other_stream = _epoch(_stream(tree, stream_id=1), 1)
    assert not torch.equal(first[0][0], other_stream[0][0])
    plan = stream.plan(1)
    assert sorted(plan.order.tolist()) == list(range(24))  # each file once per epoch
    assert torch.equal(torch.cat([y for _, y in first]), stream.files.labels[plan.order[:20]])


def test_pixels_are_the_seeded_transform_of_the_planned_file(tree: Path) -> None:
    stream = _stream(tree, normalize=False)
    plan = stream.plan(3)
    x, _ = _epoch(stream, 3, start_batch=1)[0]
    for j in range(5):
        position = 5 + j
        image = D.decode_file(stream.files.path(int(plan.order[position])))
        torch.manual_seed(int(plan.seeds[position]))  # what apply_seeded pins, done by hand here
        expected = D.random_resized_crop(12)(image)
        assert torch.allclose(x[j], expected.float() / 255, atol=1e-6)


def test_resume_at_any_batch_is_exact_and_leaves_the_caller_rng_alone(tree: Path) -> None:
    stream = _stream(tree, cutout=4)
    state = torch.get_rng_state()
    whole = _epoch(stream, 7)
    assert torch.equal(torch.get_rng_state(), state)
    for start in (1, 3, 4):
        assert _same(_epoch(stream, 7, start_batch=start), whole[start:])
    late = _epoch(stream, 10_000, start_batch=3)  # any pass, any batch: nothing before it is computed
    assert len(late) == 1 and late[0][0].shape == (5, 3, 12, 12)


def test_worker_processes_give_the_same_batches(tree: Path) -> None:
    in_process = _epoch(_stream(tree, num_workers=0), 2)
    assert _same(in_process, _epoch(_stream(tree, num_workers=2), 2))
    assert _same(in_process[2:], _epoch(_stream(tree, num_workers=2), 2, start_batch=2))


def test_streamed_shards_partition_the_epoch(tree: Path) -> None:
    whole = _stream(tree, batch_size=24, normalize=False)
    (full_x, full_y), *_ = _epoch(whole, 0)
    for rank in range(2):
        shard = _stream(tree, batch_size=4, normalize=False, shard=(rank, 2))
        assert len(shard) == 3
        x = torch.cat([b for b, _ in _epoch(shard, 0)])
        assert torch.equal(x, full_x[rank::2])  # same position, same file, same crop


def test_a_corrupt_file_fails_with_one_line_naming_it(tree: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    for c in ("a", "b"):
        (bad / c).mkdir(parents=True)
        write_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8), str(bad / c / "ok.jpg"))
    (bad / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    for workers in (0, 2):
        stream = StreamedBatchStream(D.scan_split(bad, train=True), 3, seed=0, image_size=8, num_workers=workers)
        with pytest.raises(DataError, match=r"cannot decode image .*broken\.jpg") as err:
            _epoch(stream, 0)
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="batch size 4 does not fit 3 images"):
        StreamedBatchStream(D.scan_split(bad, train=True), 4, seed=0, image_size=8)


# ------------------------------------------------------------------------------------------ the search's data


def _config(tree: Path, **extra: object):
    values = dict(dataset="imagefolder", data_dir=str(tree), image_size=12, train_size=None, val_size=None)
    values.update(batch_size=4, loader_workers=0, crop_padding=0)
    values.update(extra)
    return build_config(None, tiny_overrides(**values))


def test_streamed_search_data_split_the_chosen_files(tree: Path) -> None:
    config = _config(tree, data_path="stream", subset_fraction=0.5, augment="random_resized_crop")
    data = search_data.build_data(config, torch.device("cpu"))
    assert data.data_path == "stream" and (data.num_classes, data.in_channels) == (3, 3)
    assert isinstance(data.train, StreamedBatchStream) and isinstance(data.val, StreamedBatchStream)
    chosen = D.subset(D.scan_split(tree, train=True), 12, seed=config.seed)
    train, val = set(data.train.files.names.tolist()), set(data.val.files.names.tolist())
    assert not train & val and train | val == set(chosen.names.tolist())
    x, y = next(iter(data.val.epoch(0)))
    assert x.shape == (4, 3, 12, 12) and torch.bincount(chosen.labels).tolist() == [4, 4, 4]


def test_memory_search_data_decodes_only_the_subset(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[Path] = []
    real = decode.decode_file
    monkeypatch.setattr(decode, "decode_file", lambda path: decoded.append(path) or real(path))
    config = _config(tree, data_path="memory", subset_fraction=0.25, batch_size=3)
    data = search_data.build_data(config, torch.device("cpu"))
    assert data.data_path == "memory" and len(decoded) == 6  # 25% of 24 files, class-balanced
    assert len(data.train) == len(data.val) == 1 and next(iter(data.train.epoch(0)))[0].shape == (3, 3, 12, 12)


def test_auto_streams_large_images_and_big_subsets(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = D.scan_split(tree, train=True)
    source = D.get_source("imagefolder")
    assert search_data.choose_data_path(_config(tree), source, files) == "memory"
    assert search_data.choose_data_path(_config(tree, image_size=128), source, files) == "stream"
    assert search_data.decoded_bytes(files, 12) == 24 * 3 * 12 * 12
    assert search_data.decoded_bytes(files, None) == 24 * 3 * 20 * 24  # the first file's header, 20x24
    monkeypatch.setattr(search_data, "MEMORY_BUDGET_BYTES", 24 * 3 * 12 * 12 - 1)
    assert search_data.choose_data_path(_config(tree), source, files) == "stream"
    assert search_data.choose_data_path(_config(tree, data_path="memory"), source, files) == "memory"


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"data_path": "fast"}, "unknown data_path 'fast'"),
        ({"dataset": "synthetic", "data_path": "stream"}, "data_path 'stream' reads class-folder trees"),
        ({"dataset": "imagenet", "data_path": "memory"}, "dataset 'imagenet' streams"),
        ({"data_path": "stream", "image_size": None}, "set image_size"),
        ({"loader_workers": -1}, "loader_workers must be >= 0, got -1"),
        ({"dataset": "imagenet", "data_dir": None}, "dataset 'imagenet' needs --data-dir"),
    ],
)
def test_bad_data_settings_fail_before_any_work(tree: Path, bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(tree, **bad)


def test_streamed_search_is_deterministic_and_resumes_exactly(tree: Path, tmp_path: Path) -> None:
    from ostr_ray.core.search import Searcher

    config = _config(tree, data_path="stream", epochs=3, augment="random_resized_crop", train_size=8, val_size=4)
    straight = Searcher(config).run()
    interrupted = Searcher(config, out_dir=tmp_path)
    interrupted.run_epoch()
    del interrupted
    resumed = Searcher.resume(tmp_path, out_dir=tmp_path).run()
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        np.testing.assert_array_equal(a.alphas["normal"], b.alphas["normal"])
        np.testing.assert_array_equal(a.scores["ostr"]["normal"], b.scores["ostr"]["normal"])
