"""A search checkpoint on disk: its file name and format, atomic writes, and the RNG states it carries.

A checkpoint holds everything a resumed search needs to continue bit-identically on CPU: weights, alphas,
optimisers, scheduler, strength accumulators, early-stop counters, the epoch reports so far and every RNG
state (the data order itself is a pure function of seed and epoch, so no loader state is saved).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ostr_ray.core.events import EpochReport
from ostr_ray.fileio import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that does not fit the requested search."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomic: a crash while writing never leaves a torn checkpoint behind."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG/numpy state
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a torn file
        raise CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}); is it cut off?") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an ostr-ray search checkpoint")
    return state


def iter_history(path: str | Path) -> Iterator[EpochReport]:
    """The epoch reports stored in a checkpoint (for ``status`` views of a running search)."""
    for report in read_checkpoint(path)["history"]:
        yield EpochReport.from_json(report)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
