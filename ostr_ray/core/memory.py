"""Memory guard: will one search step at the configured batch and resolution fit where the trial runs?

A search that does not fit dies minutes in, in the kernel's OOM killer (CPU) or a CUDA OOM, with no word of
why. This module answers before any data is read: it builds the exact supernet on the target device, runs
training forwards at two small probe batches, and measures the bytes autograd keeps for backward (the
activation memory of a step, exact and device-independent; ``benchmarks/bench_graph.py`` measures the same
way). Activations are affine in the batch (per-image tensors plus a few per-channel ones: BN statistics, the
mixing weights), so two probes, at batch b and 2b, give both parts exactly and extrapolate to the real batch;
parameters, their gradients and optimiser state, and the step's two input batches are added.

Why a probe and not a formula: the saved tensors depend on every op of every edge, the stem, partial
channels, autocast and the resolution; forwards at batch 2 and 4 cost a second or two at the presets' sizes
(forward only: what is saved for backward is known once the forward ends), and are right by construction
when a space changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ostr_ray.core.config import ConfigError, SearchConfig
from ostr_ray.core.placement import autocast_dtype, resolve_device
from ostr_ray.data import get_source
from searchspaces import get_space

__all__ = [
    "DeviceMemoryError",
    "MemoryEstimate",
    "available_memory",
    "check_device_memory",
    "check_search_memory",
    "estimate_search_memory",
]

PROBE_BATCH = 2
HEADROOM = {"cuda": 1.10, "cpu": 1.50}
"""Peak over the bytes saved for backward, per device type: the backward pass's transient gradients,
allocator caching and (CUDA) cuDNN workspaces. On an H100 a DARTS / PC-DARTS search step peaked 1.5% / 1.8%
over its saved bytes (README, Benchmarks); on CPU (glibc malloc, one thread) two search steps grew the
process by 1.17x (DARTS, batch 16), 1.18x (PC-DARTS, batch 64) and 1.49x (NB201, batch 64) its saved bytes.
Rounded up, so the guard errs on the side of refusing."""

_GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one search trial needs at ``batch_size`` and ``resolution`` on ``device``."""

    device: str
    batch_size: int
    resolution: int
    activation_bytes: int
    """Saved for backward by one training forward at ``batch_size`` (probes extrapolated), times the device's
    :data:`HEADROOM`."""
    state_bytes: int
    """Weights, their gradients and SGD momentum; alphas, their gradients and Adam's two moments; the
    unrolled weights and their gradient for the second-order step."""
    input_bytes: int
    """The float32 train and val batches of one step."""

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.state_bytes + self.input_bytes

    def summary(self) -> str:
        return (
            f"~{self.total_bytes / _GB:.1f} GB per trial on {self.device} at batch {self.batch_size}, "
            f"{self.resolution}x{self.resolution} (activations {self.activation_bytes / _GB:.1f} GB, "
            f"weights and optimiser state {self.state_bytes / _GB:.2f} GB, inputs {self.input_bytes / _GB:.2f} GB)"
        )


def search_resolution(config: SearchConfig) -> int:
    return int(config.image_size or get_source(config.dataset).resolution)


def estimate_search_memory(
    config: SearchConfig, *, probe_batch: int = PROBE_BATCH, device: torch.device | str | None = None
) -> MemoryEstimate:
    """Probe the configured supernet on ``device`` (default: the configured one) at ``probe_batch`` and twice
    that, and extrapolate the bytes saved for backward to the configured batch."""
    device = resolve_device(config) if device is None else torch.device(device)
    resolution = search_resolution(config)
    batch = int(config.batch_size)
    saved_b, weight_bytes, arch_bytes = _probe(config, device, probe_batch, resolution)
    saved_2b, _, _ = _probe(config, device, 2 * probe_batch, resolution)
    per_image = (saved_2b - saved_b) / probe_batch
    fixed = max(0.0, saved_b - probe_batch * per_image)
    state = 3 * weight_bytes + 4 * arch_bytes
    if config.order == "second":
        state += 2 * weight_bytes
    return MemoryEstimate(
        device=str(device),
        batch_size=batch,
        resolution=resolution,
        activation_bytes=round((per_image * batch + fixed) * HEADROOM.get(device.type, HEADROOM["cpu"])),
        state_bytes=state,
        input_bytes=2 * batch * 3 * resolution * resolution * 4,
    )


def check_search_memory(config: SearchConfig, available_bytes: int | None = None) -> MemoryEstimate:
    """The estimate, or ConfigError with one line when it exceeds ``available_bytes`` (default: what the
    target device has free now, :func:`available_memory`)."""
    estimate = estimate_search_memory(config)
    if available_bytes is None:
        available_bytes = available_memory(torch.device(estimate.device))
    if estimate.total_bytes > available_bytes:
        raise ConfigError(
            f"needs ~{estimate.total_bytes / _GB:.1f} GB per trial, node has {available_bytes / _GB:.1f} GB; "
            "lower batch_size or add --gpus-per-trial"
        )
    return estimate


class DeviceMemoryError(ConfigError):
    """A search does not fit the memory of the device its trial was given. A retry on the same device cannot
    fit either, so a trial should fail at once on it instead of retrying."""


def check_device_memory(
    config: SearchConfig, device: torch.device | str, capacity_bytes: int | None = None, *, seeds: int = 1
) -> MemoryEstimate:
    """The estimate of ``seeds`` supernets (a seed group holds one per seed) searched on ``device``, or
    :class:`DeviceMemoryError` with one line when it exceeds ``capacity_bytes`` (default: what ``device`` has
    free now, :func:`available_memory`; a trial sharing a GPU passes its share).

    The trial's side of the guard: the driver's pre-flight cannot see a GPU trial's device (it may sit on
    another node), so a GPU trial checks its own before it reads any data, where a CUDA OOM would otherwise
    come minutes in with no word of why.
    """
    device = torch.device(device)
    estimate = estimate_search_memory(config, device=device)
    capacity = available_memory(device) if capacity_bytes is None else int(capacity_bytes)
    need = estimate.total_bytes * seeds
    if need > capacity:
        group = f" for {seeds} seeds" if seeds > 1 else ""
        at = f"batch {estimate.batch_size}, {estimate.resolution}x{estimate.resolution}"
        raise DeviceMemoryError(
            f"the search needs ~{need / _GB:.1f} GB{group} on {device} ({at}), which has {capacity / _GB:.1f} GB; "
            + _remedies(config, device)
        )
    return estimate


def _remedies(config: SearchConfig, device: torch.device) -> str:
    """What to change, as settings: a smaller batch or supernet, and bf16 where autocast applies (CUDA)."""
    kwargs = ", ".join(f"{key}: {value}" for key, value in config.space_kwargs.items())
    remedies = [f"lower batch_size (now {config.batch_size})", f"shrink space_kwargs (now {{{kwargs}}})"]
    if device.type == "cuda" and autocast_dtype(config, device) is None:
        remedies.append("set amp=bf16")
    return ", ".join(remedies[:-1]) + " or " + remedies[-1]


def available_memory(device: torch.device) -> int:
    """Free bytes for a trial: free device memory on CUDA; on CPU the kernel's MemAvailable, capped by the
    cgroup's limit (a container sees the host's RAM in /proc/meminfo but is killed at its own limit)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = _meminfo_available()
    cgroup = _cgroup_headroom()
    return min(free, cgroup) if cgroup is not None else free


# ------------------------------------------------------------------------------------------ internals
def _probe(config: SearchConfig, device: torch.device, batch: int, resolution: int) -> tuple[int, int, int]:
    """(bytes saved for backward, weight bytes, arch bytes) of one training forward at ``batch``.

    The parameters' own storages are excluded from the saved bytes (convs save their weight for backward,
    but it is the parameter itself, counted once in the state). RNG state is forked so a probe never shifts
    a seeded run's draws.
    """
    space = get_space(config.space)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        model = space.build_supernet(
            num_classes=get_source(config.dataset).num_classes or 1000, in_channels=3, **config.space_kwargs
        )
        model = model.to(device).train()
        x = torch.randn(batch, 3, resolution, resolution, device=device)
        param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in param_storages:
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        dtype = autocast_dtype(config, device)
        autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), autocast:
            model(x)
    arch = {id(p) for p in model.arch_parameters()}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in arch)
    arch_bytes = sum(p.numel() * p.element_size() for p in model.arch_parameters())
    del model, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return sum(saved.values()), weight_bytes, arch_bytes


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2 ``memory.max``, or v1 ``limit_in_bytes`` as a
    container sees it at its namespace root); None when unlimited or unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = [line[3:] for line in lines if line.startswith("0::")]
    candidates = [(Path("/sys/fs/cgroup") / v2[0].lstrip("/"), "memory.max", "memory.current")] if v2 else []
    candidates.append((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"))
    for folder, limit_file, usage_file in candidates:
        try:
            limit = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # v1 writes "unlimited" as a page-rounded 2**63 - 1
            return None
        return int(limit) - usage
    return None
