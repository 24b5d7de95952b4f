"""Tests of the search core's data layer: loading, seeded splits, and the augmented batch stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg, write_png

from ostr_ray import data as D
from ostr_ray.data import AugmentSpec, BatchStream, DataError, ImageData, decode

# The tests write their image trees with torchvision.io's encoders, deprecated in torchvision 0.29.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's decoded-image cache out of the user's ~/.cache."""
    monkeypatch.setenv("OSTR_RAY_CACHE", str(tmp_path / "cache"))


def unique_images(n: int = 40, size: int = 8, channels: int = 3, seed: int = 0) -> ImageData:
    """Random images whose label is their own index, so any output image names its source."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.arange(n), n, [str(i) for i in range(n)], (0.5,) * channels, (0.25,) * channels)


def labelled(counts: list[int]) -> ImageData:
    """Images that encode their index in two pixels, with ``counts[c]`` images of class c."""
    n = sum(counts)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return ImageData(images, labels, len(counts), [str(c) for c in range(len(counts))], (0.5,), (0.5,))


def ids(data: ImageData) -> list[int]:
    return (data.images[:, 0, 0, 0].long() * 256 + data.images[:, 0, 0, 1].long()).tolist()


# ------------------------------------------------------------------------------------------ loading


def test_synthetic_has_learnable_signal() -> None:
    train = D.load_images("synthetic", num_classes=4, size=200, image_size=8)
    test = D.load_images("synthetic", num_classes=4, size=80, image_size=8, train=False)
    assert train.images.shape == (200, 3, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and torch.bincount(train.labels).tolist() == [50] * 4
    assert train.num_classes == 4 and len(train.classes) == 4 and len(train.mean) == 3
    centroids = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(4)])
    assert torch.cdist(centroids.flatten(1), centroids.flatten(1)).fill_diagonal_(1e9).min() > 50
    dists = torch.cdist(test.images.flatten(1).float(), centroids.flatten(1))
    assert (dists.argmin(1) == test.labels).float().mean() > 0.8  # nearest class mean beats chance (0.25)


def test_synthetic_is_seeded() -> None:
    a = D.load_images("synthetic", size=30, image_size=4, seed=1)
    assert torch.equal(a.images, D.load_images("synthetic", size=30, image_size=4, seed=1).images)
    assert not torch.equal(a.images, D.load_images("synthetic", size=30, image_size=4, seed=2).images)


def test_digits_split_shapes_and_channels() -> None:
    train = D.load_images("digits")
    test = D.load_images("digits", train=False)
    assert train.images.shape == (1500, 3, 16, 16) and test.images.shape == (297, 3, 16, 16)
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # gray repeated over 3 channels
    assert set(train.labels.tolist()) == set(range(10)) and train.num_classes == 10
    assert train.mean == test.mean and train.images.max() > 200
    assert torch.equal(train.images, D.load_images("digits").images)
    assert D.load_images("digits", image_size=8).images.shape == (1500, 3, 8, 8)


def _write_tree(root: Path, *, size: int = 8, per_class: int = 3) -> None:
    """A tiny class-folder tree mixing RGB PNG, grayscale PNG and JPEG files."""
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for cls in ("dog", "cat"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
                write_png(img, str(folder / f"{i}.png"))
            write_png(torch.full((1, size, size), 77, dtype=torch.uint8), str(folder / "gray.png"))
            write_jpeg(torch.full((3, size, size), 200, dtype=torch.uint8), str(folder / "solid.jpg"))


def test_imagefolder_loads_splits_and_gray(tmp_path: Path) -> None:
    _write_tree(tmp_path / "tree")
    train = D.load_images("imagefolder", data_dir=tmp_path / "tree")
    test = D.load_images("imagefolder", data_dir=tmp_path / "tree", train=False, image_size=4)
    assert train.classes == ["cat", "dog"] and train.num_classes == 2
    assert train.images.shape == (10, 3, 8, 8) and test.images.shape == (10, 3, 4, 4)
    assert train.labels.tolist() == [0] * 5 + [1] * 5
    gray = train.images[3]  # cat/gray.png sorts after 0..2.png
    assert torch.equal(gray[0], gray[1]) and int(gray[0, 0, 0]) == 77
    assert D.class_folder_check(tmp_path / "tree" / "train") == 10


def test_imagefolder_reuses_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tree(tmp_path / "tree")
    first = D.load_images("imagefolder", data_dir=tmp_path / "tree", image_size=4)

    def no_decoding(path: Path) -> torch.Tensor:
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(decode, "decode_file", no_decoding)
    again = D.load_images("imagefolder", data_dir=tmp_path / "tree", image_size=4)
    assert torch.equal(first.images, again.images) and first.mean == again.mean
    with pytest.raises(AssertionError, match="decoded"):  # another size is another cache entry
        D.load_images("imagefolder", data_dir=tmp_path / "tree", image_size=2)
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(tmp_path / "tree" / "train" / "cat" / "new.png"))
    with pytest.raises(AssertionError, match="decoded"):  # changed contents invalidate the cache
        D.load_images("imagefolder", data_dir=tmp_path / "tree", image_size=4)


def test_imagefolder_loader_streams(tmp_path: Path) -> None:
    _write_tree(tmp_path / "tree", size=12)
    tree = tmp_path / "tree"
    loader = D.make_imagefolder_loader(tree, train=True, image_size=8, batch_size=4, num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    val = D.make_imagefolder_loader(tree, train=False, image_size=8, batch_size=10, num_workers=0)
    assert next(iter(val))[0].shape == (10, 3, 8, 8)
    shard = D.make_imagefolder_loader(
        tree, train=True, image_size=8, batch_size=1, num_workers=0, distributed=True, rank=1, world_size=2
    )
    assert isinstance(shard.sampler, torch.utils.data.DistributedSampler) and len(shard) == 5


# ------------------------------------------------------------------------------------------ subsets


def test_search_split_is_disjoint_covering_and_seeded() -> None:
    data = labelled([30, 30, 40])
    a, b = D.search_split(data, seed=3)
    assert len(a) == len(b) == 50
    assert set(ids(a)).isdisjoint(ids(b)) and set(ids(a)) | set(ids(b)) == set(range(100))
    a2, _ = D.search_split(data, seed=3)
    assert ids(a) == ids(a2)
    assert ids(D.search_split(data, seed=4)[0]) != ids(a)
    small_a, small_b = D.search_split(data, seed=3, fraction=0.8, train_size=20, val_size=5)
    assert (len(small_a), len(small_b)) == (20, 5) and set(ids(small_a)) <= set(
        ids(D.search_split(data, seed=3, fraction=0.8)[0])
    )


def test_subset_is_class_balanced() -> None:
    data = labelled([50, 30, 5, 15])
    sub = D.subset(data, 40, seed=0)
    counts = torch.bincount(sub.labels, minlength=4).tolist()
    assert counts[2] == 5 and sorted(counts[:2] + counts[3:]) == [11, 12, 12]  # the rare class is used up
    assert sum(counts) == 40 and len(set(ids(sub))) == 40
    assert ids(sub) == ids(D.subset(data, 40, seed=0)) and ids(sub) != ids(D.subset(data, 40, seed=1))
    assert len(D.subset(data, 7, seed=0, per_class=False)) == 7
    assert torch.bincount(D.subset(data, 8, seed=0).labels, minlength=4).tolist() == [2, 2, 2, 2]


# ------------------------------------------------------------------------------------------ batches


def _epoch(stream: BatchStream, epoch: int, **kw: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(stream.epoch(epoch, **kw))


def test_batch_stream_is_a_function_of_seed_and_epoch() -> None:
    data = unique_images(40)
    spec = AugmentSpec.darts(cutout=3)
    stream = BatchStream(data, 8, seed=5, augment=spec)
    assert len(stream) == 5
    first = _epoch(stream, 2)
    replay = _epoch(BatchStream(data, 8, seed=5, augment=spec), 2)
    for (x, y), (x2, y2) in zip(first, replay, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(40))  # each image once
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in _epoch(stream, 3)]))
    other = BatchStream(data, 8, seed=5, augment=spec, stream_id=1)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in _epoch(other, 2)]))
    resumed = _epoch(stream, 2, start_batch=3)
    assert len(resumed) == 2 and torch.equal(resumed[0][0], first[3][0])


def test_batch_stream_partial_last_batch_and_layout() -> None:
    data = unique_images(10)
    stream = BatchStream(data, 4, seed=0, drop_last=False, channels_last=True)
    batches = _epoch(stream, 0)
    assert len(stream) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (data.images[y].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)


def _crops_and_flips(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    h, w = img.shape[-2:]
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    crops = [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_and_flip_move_pixels_as_specified() -> None:
    data = unique_images(32)
    for spec in (
        AugmentSpec(horizontal_flip=True, normalize=False),
        AugmentSpec(random_crop_padding=2, normalize=False),
        AugmentSpec(random_crop_padding=2, horizontal_flip=True, normalize=False),
    ):
        x, y = next(BatchStream(data, 32, seed=0, augment=spec).epoch(0))
        assert x.shape == (32, 3, 8, 8) and x.min() >= 0.0 and x.max() <= 1.0
        changed = 0
        for out, label in zip(x, y, strict=True):
            source = data.images[label].float() / 255
            assert any(torch.equal(out, c) for c in _crops_and_flips(source, spec.random_crop_padding)), spec
            changed += not torch.equal(out, source)
        assert changed > 8, spec
        if spec.random_crop_padding == 0:  # flip alone: about half the images come out mirrored
            mirrored = [data.images[t].float().flip(-1) / 255 for t in y]
            flips = sum(torch.equal(o, m) for o, m in zip(x, mirrored, strict=True))
            assert 8 <= flips <= 24


def test_cutout_zeroes_a_square() -> None:
    data = unique_images(16, size=12)
    x, _ = next(BatchStream(data, 16, seed=1, augment=AugmentSpec(cutout=4, normalize=False)).epoch(0))
    for img in x:
        zero = (img == 0).all(0)  # source pixels are >= 1, so zeros are cutout
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4  # clipped at the border, never bigger
        assert zero.sum() == len(rows) * len(cols) and (rows.diff() == 1).all() and (cols.diff() == 1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_stream_same_batches_on_cuda() -> None:
    data = unique_images(24)
    spec = AugmentSpec.darts(cutout=3)
    cpu = _epoch(BatchStream(data, 8, seed=0, augment=spec), 1)
    gpu = _epoch(BatchStream(data, 8, seed=0, augment=spec, device="cuda"), 1)
    for (x, y), (xg, yg) in zip(cpu, gpu, strict=True):
        assert torch.equal(y, yg.cpu()) and torch.allclose(x, xg.cpu(), atol=1e-6)


# ------------------------------------------------------------------------------------------ shards and hooks


def test_shards_partition_each_epoch_exactly_as_the_sharded_stream_did() -> None:
    """Every rank draws the whole epoch's plan and keeps positions rank::world of it truncated to a multiple
    of the world size (the old ShardedBatchStream, and DistributedSampler): so each rank's batches are the
    whole-set stream's images at those positions, with the same augmentation, pixel for pixel."""
    data = unique_images(43)
    spec = AugmentSpec.darts(cutout=3)
    whole = BatchStream(data, 43, seed=5, augment=spec)  # one batch: the epoch's images in position order
    ranks = [BatchStream(data, 7, seed=5, augment=spec, shard=(r, 3)) for r in range(3)]
    assert [len(s) for s in ranks] == [2, 2, 2]  # 43 -> 42 -> 14 per rank -> 2 batches of 7
    seen = []
    for epoch in (0, 1):
        full_x, full_y = _epoch(whole, epoch)[0]
        labels = []
        for rank, stream in enumerate(ranks):
            batches = _epoch(stream, epoch)
            positions = torch.arange(rank, 42, 3)
            assert torch.equal(torch.cat([y for _, y in batches]), full_y[positions])
            assert torch.equal(torch.cat([x for x, _ in batches]), full_x[positions])
            labels.append(torch.cat([y for _, y in batches]).tolist())
        assert all(len(ids) == 14 for ids in labels)  # equal length: every rank takes the same DDP steps
        assert len(set().union(*labels)) == 42 and set().union(*labels) == set(full_y[:42].tolist())  # disjoint, cover
        seen.append(labels)
    assert seen[0] != seen[1]  # reshuffled every epoch
    assert torch.equal(_epoch(ranks[1], 1, start_batch=1)[0][0], _epoch(ranks[1], 1)[1][0])  # resumes mid-epoch
    unsharded = _epoch(BatchStream(data, 7, seed=5, augment=spec), 0)
    world_one = _epoch(BatchStream(data, 7, seed=5, augment=spec, shard=(0, 1)), 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(unsharded, world_one, strict=True))
    with pytest.raises(DataError, match=r"batch size 15 x 3 shards does not fit 43 images"):
        BatchStream(data, 15, seed=0, shard=(0, 3))
    with pytest.raises(DataError, match=r"shard \(3, 3\) must be \(rank, world_size\)"):
        BatchStream(data, 2, seed=0, shard=(3, 3))


def test_indices_share_one_tensor_and_give_the_copied_halfs_batches() -> None:
    data = unique_images(40)
    half = torch.tensor([1, 4, 5, 9, 12, 20, 21, 22, 30, 33, 38])
    spec = AugmentSpec.darts(cutout=3)
    shared = BatchStream(data, 4, seed=3, augment=spec, indices=half, stream_id=1)
    copied = BatchStream(data.take(half), 4, seed=3, augment=spec, stream_id=1)
    assert len(shared) == len(copied) == 2 and shared.images.data_ptr() == data.images.data_ptr()
    assert torch.equal(shared.labels, half)  # the stream's own labels, by position
    for e in (0, 5):
        for (x, y), (x2, y2) in zip(shared.epoch(e), copied.epoch(e), strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)


def test_image_transform_runs_per_image_before_normalising() -> None:
    data = unique_images(24)
    spec = AugmentSpec(horizontal_flip=True, normalize=False)
    plain = _epoch(BatchStream(data, 8, seed=1, augment=spec), 2)
    inverted = _epoch(BatchStream(data, 8, seed=1, augment=spec, image_transform=lambda im: 255 - im), 2)
    for (x, y), (xi, yi) in zip(plain, inverted, strict=True):
        assert torch.equal(y, yi) and torch.allclose(xi, 1 - x, atol=1e-6)  # same order and flips, then the hook
    cut = _epoch(BatchStream(data, 8, seed=1, augment=AugmentSpec(cutout=4), image_transform=lambda im: 255 - im), 0)
    assert all((x == 0).any() for x, _ in cut)  # cutout comes after the hook


def test_image_transform_draws_are_a_function_of_position() -> None:
    from torchvision.transforms import v2

    data = unique_images(30, size=12)
    crop = v2.RandomResizedCrop(8, antialias=True)

    def stream(**kw: object) -> BatchStream:
        return BatchStream(data, 5, seed=2, image_transform=crop, **kw)

    state = torch.get_rng_state()
    first = _epoch(stream(), 3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left as it was
    assert first[0][0].shape == (5, 3, 8, 8)
    again = _epoch(stream(), 3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert torch.equal(_epoch(stream(), 3, start_batch=4)[0][0], first[4][0])
    other = _epoch(stream(), 4)
    assert not torch.equal(torch.cat([x for x, _ in first]), torch.cat([x for x, _ in other]))
    # a shard's images get the draws of their positions in the whole epoch, whatever the number of shards
    whole_x = torch.cat([x for x, _ in first])
    shard = _epoch(stream(shard=(1, 2)), 3)
    assert torch.equal(torch.cat([x for x, _ in shard]), whole_x[torch.arange(1, 30, 2)])


# ------------------------------------------------------------------------------------------ registry


def test_one_registry_names_every_data_set() -> None:
    from ostr_ray.core import config
    from ostr_ray.retrain import spec

    assert D.DATASETS == ("cifar10", "cifar100", "imagenet", "imagefolder", "digits", "synthetic")
    assert config.DATASETS is D.DATASETS and spec.DATASETS is D.DATASETS
    imagenet, folder, cifar = D.get_source("imagenet"), D.get_source("imagefolder"), D.get_source("CIFAR100")
    assert imagenet.streams and imagenet.folder and imagenet.needs_data_dir and imagenet.mean == D.IMAGENET_MEAN
    assert folder.folder and not folder.streams and folder.mean is None  # measured on the decoded images
    assert cifar.can_download and cifar.num_classes == 100 and not cifar.needs_data_dir
    assert D.CIFAR_STATS["cifar10"] == (D.SOURCES["cifar10"].mean, D.SOURCES["cifar10"].std)
    for call in (
        lambda: D.get_source("mnist"),
        lambda: D.check_data_source("mnist", None),
        lambda: D.load_images("mnist"),
    ):
        with pytest.raises(DataError) as err:
            call()
        assert str(err.value) == "unknown dataset 'mnist'; choose from " + ", ".join(D.DATASETS)
    with pytest.raises(DataError, match="dataset 'imagenet' needs a data dir"):
        D.check_data_source("imagenet", None)
    with pytest.raises(DataError, match="dataset 'imagenet' streams"):
        D.load_images("imagenet", data_dir="/data")


def test_data_path_checks_name_the_bad_value() -> None:
    D.check_data_path("imagefolder", "stream", 224)
    D.check_data_path("cifar10", "memory", None)
    for args, message in (
        (("cifar10", "fast", None), "unknown data_path 'fast'; choose from auto, memory, stream"),
        (("cifar10", "stream", 32), "data_path 'stream' reads class-folder trees (imagenet, imagefolder), not dataset"),
        (("imagenet", "memory", 224), "dataset 'imagenet' streams; use data_path auto or stream"),
        (("imagefolder", "stream", None), "set image_size"),
        (("imagenet", "auto", None), "set image_size"),
        (("imagefolder", "auto", 8, -1), "loader_workers must be >= 0, got -1"),
    ):
        with pytest.raises(DataError) as err:
            D.check_data_path(*args)
        assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ file lists


def _write_jpeg_tree(root: Path, *, classes: int = 3, per_class: int = 6, size: int = 10) -> Path:
    g = torch.Generator().manual_seed(1)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            coarse = torch.rand(3, 3, 3, generator=g)
            img = torch.nn.functional.interpolate(coarse[None], size=(size, size), mode="bilinear")[0]
            write_jpeg(img.mul(255).to(torch.uint8), str(root / f"c{c}" / f"{i}.jpg"))
    return root


def test_subset_is_drawn_on_the_file_list_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _write_jpeg_tree(tmp_path / "tree")
    full = D.load_images("imagefolder", data_dir=tree, image_size=8)
    decoded_then_drawn = D.subset(full, 7, seed=3)
    files = D.scan_split(tree, train=True)
    chosen = D.subset(files, 7, seed=3)
    assert torch.equal(chosen.labels, decoded_then_drawn.labels)
    for path in set(files.paths()) - set(chosen.paths()):
        path.write_bytes(b"not a jpeg")  # only the chosen files can still be decoded
    monkeypatch.setenv("OSTR_RAY_CACHE", str(tmp_path / "fresh-cache"))
    decoded: list[Path] = []
    real_decode = decode.decode_file
    monkeypatch.setattr(decode, "decode_file", lambda path: decoded.append(path) or real_decode(path))
    drawn_then_decoded = D.load_images("imagefolder", data_dir=tree, image_size=8, subset_size=7, seed=3)
    assert sorted(decoded) == sorted(chosen.paths())
    assert torch.equal(drawn_then_decoded.images, decoded_then_drawn.images)
    assert torch.equal(drawn_then_decoded.labels, decoded_then_drawn.labels)
    assert drawn_then_decoded.classes == ["c0", "c1", "c2"] and drawn_then_decoded.num_classes == 3


def test_cache_key_holds_the_chosen_files(tmp_path: Path) -> None:
    from ostr_ray.data.cache import cache_file

    files = D.scan_split(_write_jpeg_tree(tmp_path / "tree"), train=True)
    first, second = D.subset(files, 6, seed=0), D.subset(files, 6, seed=1)
    assert cache_file(first, 8) == cache_file(D.subset(files, 6, seed=0), 8)
    assert cache_file(first, 8) != cache_file(second, 8) != cache_file(files, 8)
    assert cache_file(first, 8) != cache_file(first, 4)
    assert len(files) == 18 and files.take(torch.tensor([5])).path(0) == tmp_path / "tree" / "c0" / "5.jpg"


def test_a_tree_subset_is_one_draw_by_size_or_by_fraction(tmp_path: Path) -> None:
    tree = _write_jpeg_tree(tmp_path / "tree")
    files = D.scan_split(tree, train=True)
    by_fraction = D.folder_files(tree, train=True, seed=2, fraction=0.5)
    assert D.subset_count(len(files), 0.5) == 9 and by_fraction.paths() == D.subset(files, 9, seed=2).paths()
    assert D.folder_files(tree, train=True, seed=2, size=9).paths() == by_fraction.paths()
    assert D.folder_files(tree, train=True, seed=2, size=100).paths() == files.paths()  # all of it: no draw
    assert D.folder_files(tree, train=True, seed=2, fraction=1.0).paths() == files.paths()


def test_image_cache_paths_differ_by_key_and_share_one_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ostr_ray.data.cache import image_cache_path

    monkeypatch.setenv("OSTR_RAY_CACHE", str(tmp_path))
    train = image_cache_path("digits-train", "digits", True, 8)
    test = image_cache_path("digits-test", "digits", False, 8)
    assert train.parent == test.parent == tmp_path / "images" and train.name.startswith("digits-train-")
    assert train != image_cache_path("digits-train", "digits", True, 16) and train.suffix == ".pt"


# ------------------------------------------------------------------------------------------ errors


def test_data_errors_name_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'.*cifar10.*synthetic"):
        D.load_images("mnist")
    with pytest.raises(DataError, match="does not exist"):
        D.load_images("imagefolder", data_dir=tmp_path / "missing")
    with pytest.raises(DataError, match="--download"):
        D.load_images("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError, match="--download"):
        D.load_images("cifar100", data_dir=tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class folders"):
        D.class_folder_check(tmp_path / "flat")
    (tmp_path / "flat" / "empty_class").mkdir()
    with pytest.raises(DataError, match="without images.*empty_class"):
        D.class_folder_check(tmp_path / "flat")
    with pytest.raises(DataError, match="no test/ or val/"):
        D.load_images("imagefolder", data_dir=tmp_path / "flat", train=False)
    with pytest.raises(DataError, match="image_size must be >= 1, got 0"):
        D.load_images("digits", image_size=0)


def test_size_errors_name_both_numbers(tmp_path: Path) -> None:
    data = unique_images(10)
    with pytest.raises(DataError, match=r"batch size 11 .* 10 images"):
        BatchStream(data, 11, seed=0)
    with pytest.raises(DataError, match=r"batch size 0 .* 10 images"):
        BatchStream(data, 0, seed=0, drop_last=False)
    assert len(BatchStream(data, 11, seed=0, drop_last=False)) == 1
    with pytest.raises(DataError, match=r"subset size 11 .* 10 images"):
        D.subset(data, 11, seed=0)
    with pytest.raises(DataError, match=r"val_size 6 .* 5 images"):
        D.search_split(data, 0, val_size=6)
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\), got 1.5"):
        D.search_split(data, 0, fraction=1.5)
    with pytest.raises(DataError, match="random_crop_padding must be >= 0, got -1"):
        AugmentSpec(random_crop_padding=-1)
    for name, size in (("a", 4), ("b", 6)):
        (tmp_path / "mixed" / name).mkdir(parents=True)
        write_png(torch.zeros(3, size, size, dtype=torch.uint8), str(tmp_path / "mixed" / name / "x.png"))
    with pytest.raises(DataError, match="different sizes"):
        D.load_images("imagefolder", data_dir=tmp_path / "mixed")
    resized = D.load_images("imagefolder", data_dir=tmp_path / "mixed", image_size=5)
    assert resized.images.shape == (2, 3, 5, 5)
    (tmp_path / "mixed" / "a" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode image .*bad.png"):
        D.load_images("imagefolder", data_dir=tmp_path / "mixed", image_size=5)


# ------------------------------------------------------------------------------------------ real CIFAR-10


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason=f"CIFAR-10 ImageFolder tree not at {SHARED_CIFAR}")
def test_shared_cifar10_tree() -> None:
    """Counts both splits and decodes the 10k test split at 16x16 (a few seconds; the 50k train is not)."""
    assert D.class_folder_check(SHARED_CIFAR / "train") == 50_000
    assert D.class_folder_check(SHARED_CIFAR / "test") == 10_000
    test = D.load_images("imagefolder", data_dir=SHARED_CIFAR, train=False, image_size=16)
    assert test.images.shape == (10_000, 3, 16, 16) and test.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10 and test.classes[0] == "airplane"
    assert all(abs(m - c) < 0.03 for m, c in zip(test.mean, D.CIFAR_STATS["cifar10"][0], strict=True))
