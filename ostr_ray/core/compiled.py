"""Whether and how a search compiles its supernet forward: ``SearchConfig.compile``, on CUDA only.

The DARTS-like supernets are launch-bound on a GPU (hundreds of small kernels per step), which is what
torch.compile's fusion and CUDA graphs (``reduce-overhead``) address. On CPU a run stays eager whatever the
setting: CPU results must not depend on a C++ toolchain being present, and CPU behaviour stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from ostr_ray.core.config import SearchConfig

F = TypeVar("F", bound=Callable)


def compile_mode(config: SearchConfig, device: torch.device) -> str | None:
    """The torch.compile mode a search on ``device`` uses; None = eager."""
    if device.type != "cuda" or config.compile == "off":
        return None
    return config.compile


def maybe_compiled(fn: F, mode: str | None, *, backend: str = "inductor") -> F:
    """``fn`` compiled in ``mode`` (None: ``fn`` itself). ``backend`` lets a CPU test trace the same function
    with ``aot_eager`` (dynamo + AOTAutograd, no code generation), so the compiled path is checked without a GPU."""
    if mode is None:
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode, backend=backend)  # type: ignore[return-value]
