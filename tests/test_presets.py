"""Every search preset and retraining protocol in ``launch/`` can start: its exact network is built and trained
for a step or two on generated data at its own resolution (CPU, batch 2). Parametrised over the YAML files found,
so a new preset or protocol is covered without touching this file; one that cannot start fails here, not on a
user's cluster. Each network's size is tied to a count derived by hand or published: a preset's search network to
the derivation for its space, size, stem and K; a protocol's network of a published cell to that cell's size (a
new protocol adds its size here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ostr_ray.core.config import SearchConfig, build_config, list_presets, load_preset
from ostr_ray.core.search import Searcher
from ostr_ray.core.search_data import SearchData
from ostr_ray.core.step import stack_batches
from ostr_ray.data import AugmentSpec, BatchStream, ImageData, get_source
from ostr_ray.retrain.protocols import build_retrain_config, list_protocols
from searchspaces import get_space
from searchspaces.darts_eval import count_parameters
from searchspaces.darts_genotype import DARTS_V2
from searchspaces.nb201_genotype import NB201Genotype
from tests.test_darts import hand_darts_search_size
from tests.test_nb201 import BEST_CIFAR10, hand_nb201_search_size

REPO = Path(__file__).resolve().parents[1]


def preset_classes(config: SearchConfig) -> int:
    """10 for cifar10/digits, 100 for cifar100; an image folder the preset names and this machine has counts
    its class folders (the CPU proxies' CIFAR-10 tree), any other is the user's ImageNet (1000)."""
    if get_source(config.dataset).num_classes:
        return get_source(config.dataset).num_classes
    root = REPO / config.data_dir if config.data_dir else None
    if root is None or not root.is_dir():
        return 1000
    root = root / "train" if (root / "train").is_dir() else root
    return sum(1 for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def generated_images(n: int, classes: int, resolution: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=g)
    labels = torch.tensor([(i * 7919) % classes for i in range(n)])  # spread over the whole label range
    return ImageData(images, labels, classes, [f"c{i}" for i in range(classes)], (0.5,) * 3, (0.25,) * 3)


def preset_search(name: str) -> tuple[Searcher, int]:
    """A Searcher over the preset's exact supernet, batch 2, generated data at the preset's resolution."""
    values = load_preset(name)
    config = build_config(
        name, {"batch_size": 2, "device": "cpu", "threads": 1, "data_dir": values.get("data_dir", "/generated")}
    )
    resolution = config.image_size or get_source(config.dataset).resolution
    classes = preset_classes(config)
    augment = AugmentSpec(config.crop_padding, config.horizontal_flip, config.cutout)
    train, val = (
        BatchStream(generated_images(4, classes, resolution, seed), 2, seed=0, augment=augment, stream_id=seed)
        for seed in (0, 1)
    )
    return Searcher(config, data=SearchData(train, val, classes, 3)), resolution


README_SEARCH_SIZES = {
    "darts-cifar10": 1_930_618,
    "darts-imagenet": 2_215_648,
    "pcdarts-cifar10": 299_578,
    "pcdarts-imagenet": 956_512,
}
"""The search-network sizes the README states for the paper presets."""


def hand_search_size(space: str, kwargs: dict, classes: int) -> int:
    """The search network's size derived by hand (tests/test_darts.py, tests/test_nb201.py) for the space, its
    size, stem and K; the defaults are each supernet's (the papers' C=16, 8 cells, K=4; NB201 C=16, N=5)."""
    if space == "nb201":
        return hand_nb201_search_size(kwargs.get("C", 16), kwargs.get("N", 5), classes)
    if space in ("darts", "pcdarts"):
        k = kwargs.get("partial_k", 4) if space == "pcdarts" else 1
        return hand_darts_search_size(
            kwargs.get("C", 16), kwargs.get("layers", 8), kwargs.get("stem", "cifar"), classes, k
        )
    raise AssertionError(f"no hand-derived search-network size for space {space!r}: add one for its presets")


# The heaviest, darts-cifar10 (C=16, 8 full-channel cells at 32x32) and darts-imagenet, take ~5 s each on one
# CPU thread: none needs the slow mark.
@pytest.mark.parametrize("name", list_presets())
def test_preset_builds_its_supernet_and_takes_two_search_steps(name):
    searcher, resolution = preset_search(name)
    values = load_preset(name)  # the YAML as written: the network must be the one derived by hand for it
    size = sum(p.numel() for p in searcher.model.weight_parameters())
    assert size == hand_search_size(values["space"], values.get("space_kwargs", {}), searcher.data.num_classes)
    if name in README_SEARCH_SIZES:
        assert size == README_SEARCH_SIZES[name]
    before = {n: p.detach().clone() for n, p in searcher.model.named_parameters()}
    batches = zip(searcher.data.train.epoch(0), searcher.data.val.epoch(0))
    search_step = searcher.step()  # the seed's own tensors, stepped in place
    for step, (train_batch, val_batch) in enumerate(batches):
        assert tuple(train_batch[0].shape) == (2, 3, resolution, resolution)
        _, finite = search_step.train_step(stack_batches([train_batch]), stack_batches([val_batch]), arch_active=True)
        assert bool(finite[0]), f"{name}: non-finite loss at step {step}"
    assert step == 1 and search_step.accumulator.count == 2
    moved = [n for n, p in searcher.model.named_parameters() if not torch.equal(p, before[n])]
    assert set(searcher.model.alphas) and all(f"alphas.{c}" in moved for c in searcher.model.alphas)
    assert len(moved) > len(before) // 2, f"{name}: the weight step left most weights unchanged"


def _random_genotype(space_name: str):
    space = get_space(space_name)
    g = torch.Generator().manual_seed(0)
    return space.decode({cell: torch.rand(space.alpha_shape, generator=g) for cell in space.cell_types})


PUBLISHED_CELLS = {"nb201": NB201Genotype.from_string(BEST_CIFAR10), "darts": DARTS_V2, "pcdarts": DARTS_V2}
PROTOCOL_SIZES = {"nb201": 1_288_506, "darts-cifar": 3_349_342, "darts-imagenet": 4_718_752}
"""Parameters without the auxiliary head: NB201's best CIFAR-10 cell at C=16, N=5 (NB201: 1.29 MB); DARTS_V2 in
NetworkCIFAR C=36, 20 cells (DARTS: 3.3M) and NetworkImageNet C=48, 14 cells (DARTS: 4.7M)."""


@pytest.mark.parametrize("name", list_protocols())
def test_protocol_builds_its_eval_network_and_takes_one_training_step(name):
    from ostr_ray.retrain.network import build_network
    from ostr_ray.retrain.worker import make_optimizer, train_step

    config = build_retrain_config(name, {"batch_size": 2})
    resolution = config.image_size or 32
    classes = 1000 if config.network_kind == "imagenet" else 10
    torch.manual_seed(0)
    assert name in PROTOCOL_SIZES, f"protocol {name!r}: add its network's published or hand-derived size"
    for space in config.spaces:  # the protocol's network of a published cell has its published size
        published = build_network(space, PUBLISHED_CELLS[space], config, classes)
        assert count_parameters(published) == PROTOCOL_SIZES[name]
    net = build_network(config.spaces[0], _random_genotype(config.spaces[0]), config, classes).train()
    if hasattr(net, "drop_path_prob"):
        net.drop_path_prob = config.drop_path_prob
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, classes - 1])
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    loss, logits = train_step(
        net, x, y, criterion=criterion, optimizer=make_optimizer(net, config), config=config, amp=False
    )
    assert logits.shape == (2, classes) and torch.isfinite(loss)
    assert any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))
