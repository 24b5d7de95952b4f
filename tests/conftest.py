"""Shared fixtures: tiny configs on synthetic data, and where the offline shared data lives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
NB201_CSV = SHARED / "nb201" / "nb201_cifar10.csv"
CIFAR10_DIR = SHARED / "cifar10"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded: deterministic and fair to the other tests on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_overrides(**extra):
    """A seconds-long NB201 search on synthetic 8x8 data."""
    values = dict(
        space="nb201",
        space_kwargs={"C": 4, "N": 1},
        dataset="synthetic",
        image_size=8,
        train_size=64,
        val_size=64,
        batch_size=16,
        epochs=3,
        a_lr=3e-2,
        crop_padding=1,
        threads=1,
    )
    values.update(extra)
    return values


@pytest.fixture
def nb201_csv() -> Path:
    if not NB201_CSV.is_file():
        pytest.skip(f"shared NB201 table not found at {NB201_CSV} (only on project machines)")
    return NB201_CSV
