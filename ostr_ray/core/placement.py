"""Where a search runs and in which number format: the device, channels_last and autocast choices.

The defaults were measured, not guessed: on an H100 the supernets' many small convolutions leave the GPU
waiting on kernel launches, so fp32 and contiguous memory were fastest (README, Benchmarks).
"""

from __future__ import annotations

import torch

from ostr_ray.core.config import SearchConfig


def resolve_device(config: SearchConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def use_channels_last(config: SearchConfig, device: torch.device) -> bool:
    # Off unless asked for: on an H100 channels_last made the NB201 and PC-DARTS search steps 20-25% slower
    # and the DARTS step no faster (benchmarks/gpu_check.sh; README, Benchmarks).
    return device.type == "cuda" and bool(config.channels_last)


def autocast_dtype(config: SearchConfig, device: torch.device) -> torch.dtype | None:
    # "auto" is fp32: bf16 autocast's casts made every preset's step 5-30% slower on an H100 (README,
    # Benchmarks). "bf16" opts in; it needs no loss scaling, so strength is read from the gradients as they are.
    if device.type != "cuda" or config.amp != "bf16":
        return None
    return torch.bfloat16
