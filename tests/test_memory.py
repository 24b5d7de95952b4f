"""Memory guard: a probe at batch 2 scaled to the real batch; a config that cannot fit is refused in one line."""

from __future__ import annotations

import pytest
import torch

from ostr_ray.core.config import ConfigError, build_config
from ostr_ray.core.memory import (
    HEADROOM,
    DeviceMemoryError,
    available_memory,
    check_device_memory,
    check_search_memory,
    estimate_search_memory,
)
from tests.conftest import tiny_overrides

GB = 1e9


def test_a_config_too_large_for_the_node_is_refused_in_one_line():
    # PC-DARTS' ImageNet search at its own batch of 1024 on a node with 8 GB: the probe runs at batch 2
    config = build_config("pcdarts-imagenet", {"data_dir": "/imagenet", "device": "cpu"})
    with pytest.raises(ConfigError) as err:
        check_search_memory(config, available_bytes=int(8 * GB))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("needs ~") and message.endswith(
        " GB per trial, node has 8.0 GB; lower batch_size or add --gpus-per-trial"
    )
    needed = float(message.removeprefix("needs ~").split(" GB")[0])
    assert 8 < needed == pytest.approx(estimate_search_memory(config).total_bytes / GB, abs=0.051)


def test_a_config_that_fits_passes_and_says_what_it_needs():
    config = build_config(None, tiny_overrides(device="cpu"))
    estimate = check_search_memory(config)  # this machine's free RAM
    assert 0 < estimate.total_bytes < available_memory(torch.device("cpu"))
    assert check_search_memory(config, available_bytes=estimate.total_bytes) == estimate
    with pytest.raises(ConfigError, match="node has 0.0 GB"):
        check_search_memory(config, available_bytes=estimate.total_bytes - 1)
    assert (estimate.batch_size, estimate.resolution, estimate.device) == (16, 8, "cpu")
    assert "per trial on cpu at batch 16, 8x8" in estimate.summary()


def test_activations_are_extrapolated_affinely_from_the_probes():
    def at(batch: int, **kw):
        return estimate_search_memory(build_config(None, tiny_overrides(device="cpu", batch_size=batch)), **kw)

    estimates = {b: at(b) for b in (8, 36, 64)}
    act = {b: e.activation_bytes for b, e in estimates.items()}
    assert act[8] < act[36] < act[64] and act[36] == pytest.approx((act[8] + act[64]) / 2, abs=8)
    # the probe batch does not matter
    assert at(64, probe_batch=8).activation_bytes == pytest.approx(act[64], abs=8)
    assert estimates[8].state_bytes == estimates[64].state_bytes > 0
    assert estimates[64].input_bytes == 2 * 64 * 3 * 8 * 8 * 4


def test_the_probe_counts_what_autograd_keeps_for_backward():
    """The estimate at batch B is the bytes a real training forward at B saves (parameters aside), plus headroom."""
    config = build_config(
        None, tiny_overrides(device="cpu", batch_size=8, space="darts", space_kwargs={"C": 4, "layers": 3})
    )
    from searchspaces import get_space

    model = get_space("darts").build_supernet(num_classes=10, **config.space_kwargs).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(torch.randn(8, 3, 8, 8))
    estimate = estimate_search_memory(config)
    assert estimate.activation_bytes == pytest.approx(HEADROOM["cpu"] * sum(saved.values()), abs=8)


def test_the_probe_leaves_the_random_stream_alone():
    config = build_config(None, tiny_overrides(device="cpu"))
    torch.manual_seed(5)
    estimate_search_memory(config)
    after_probe = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_probe, torch.rand(3))


def test_second_order_needs_more_state():
    first = estimate_search_memory(build_config(None, tiny_overrides(device="cpu")))
    second = estimate_search_memory(build_config(None, tiny_overrides(device="cpu", order="second")))
    assert second.state_bytes > first.state_bytes and second.activation_bytes == first.activation_bytes


def test_the_trials_own_device_is_checked_against_its_capacity():
    """The GPU trial's side of the guard, on CPU with an injected capacity: the estimate is made on the device
    named (not the configured one), fits at exactly its size and is refused one byte under, in one line that
    names the estimate, the device, its capacity and the settings to change."""
    config = build_config(None, tiny_overrides(device="auto", space_kwargs={"C": 4, "N": 1}))
    estimate = check_device_memory(config, "cpu", capacity_bytes=10**12)
    assert estimate == estimate_search_memory(config, device=torch.device("cpu")) and estimate.device == "cpu"
    assert check_device_memory(config, torch.device("cpu"), capacity_bytes=estimate.total_bytes) == estimate
    with pytest.raises(DeviceMemoryError) as err:
        check_device_memory(config, "cpu", capacity_bytes=estimate.total_bytes - 1)
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, ConfigError)
    assert message.startswith(f"the search needs ~{estimate.total_bytes / GB:.1f} GB on cpu (batch 16, 8x8), ")
    assert f"which has {(estimate.total_bytes - 1) / GB:.1f} GB; " in message
    assert message.endswith("lower batch_size (now 16) or shrink space_kwargs (now {C: 4, N: 1})")


def test_a_seed_group_needs_one_supernet_per_seed_and_cuda_is_told_about_bf16():
    config = build_config("pcdarts-imagenet", {"data_dir": "/imagenet", "device": "cpu"})
    one = estimate_search_memory(config)
    check_device_memory(config, "cpu", capacity_bytes=3 * one.total_bytes, seeds=3)
    with pytest.raises(DeviceMemoryError, match=r"^the search needs ~\d+\.\d GB for 3 seeds on cpu \(batch 1024,"):
        check_device_memory(config, "cpu", capacity_bytes=3 * one.total_bytes - 1, seeds=3)
    from ostr_ray.core.memory import _remedies

    assert _remedies(config, torch.device("cuda")).endswith(" or set amp=bf16")
    assert "amp" not in _remedies(build_config(None, tiny_overrides(amp="bf16")), torch.device("cuda"))


def test_a_trial_refuses_a_search_its_gpu_cannot_hold_before_reading_data():
    """The trial's guard (orchestration/trial.py) with the device's capacity injected: one line, and a
    ``ConfigError``, which the trial reports as its failure instead of raising (so Tune does not retry it)."""
    from ostr_ray.orchestration.trial import guard_device_memory

    config = build_config(None, tiny_overrides())
    guard_device_memory(config, [0, 1], 0.0)  # a CPU trial: Ray reserved its host memory from the pre-flight
    guard_device_memory(config, [0, 1], 0.5, capacity_bytes=10**12)
    with pytest.raises(ConfigError) as refused:
        guard_device_memory(config, [0, 1], 0.5, capacity_bytes=1000)
    assert "for 2 seeds" in str(refused.value) and "\n" not in str(refused.value)
