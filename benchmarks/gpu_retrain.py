"""Retraining throughput of the DARTS protocol networks on one GPU: images/s of a full train step.

Measures DARTS_V2 in ``NetworkCIFAR`` (C=36, 20 cells, 32x32, batch 96: the darts-cifar protocol) and in
``NetworkImageNet`` (C=48, 14 cells, 224x224, batch 256), each with and without bf16 autocast and with and
without channels_last. A step is exactly the retrain engine's (``ostr_ray.retrain.train_step``): forward with
the auxiliary head, loss + 0.4 x auxiliary loss (label smoothing 0.1 on ImageNet), backward, gradient
clipping at 5, SGD step, with drop-path at 0.1. Inputs are synthetic tensors already on the GPU, so this
is the model's speed, not the data pipeline's. A few warm-up steps (cuDNN autotuning) precede ~20 timed
steps; each step is timed between two ``torch.cuda.synchronize()`` and the median is reported.

    python benchmarks/gpu_retrain.py out/gpu_retrain.json          # on a GPU; < 3 minutes on an H100
    python benchmarks/gpu_retrain.py /tmp/smoke.json --smoke       # tiny networks on CPU: checks it runs

Prints a markdown table and writes the rows (plus device and software versions) as JSON to the path given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ostr_ray.retrain import build_network, build_retrain_config, make_optimizer, train_step  # noqa: E402
from searchspaces.darts_genotype import DARTS_V2  # noqa: E402

# (name, protocol, batch, resolution, classes, network overrides); smoke sizes replace them on CPU.
NETWORKS = {
    "cifar": ("NetworkCIFAR C=36 L=20", "darts-cifar", 96, 32, 10, {}),
    "imagenet": ("NetworkImageNet C=48 L=14", "darts-imagenet", 256, 224, 1000, {}),
}
SMOKE = {
    "darts-cifar": (4, 32, 10, {"C": 8, "layers": 3}),
    "darts-imagenet": (2, 224, 1000, {"C": 8, "layers": 3}),
}
VARIANTS = ((False, False), (False, True), (True, False), (True, True))
"""(bf16 autocast, channels_last)."""
TIME_BUDGET_S = 160.0
"""Default ``--budget-s``: variants left when this much time has passed are skipped (and marked so)."""


def bench_one(
    protocol: str,
    batch: int,
    resolution: int,
    classes: int,
    network: dict,
    *,
    amp: bool,
    channels_last: bool,
    device: torch.device,
    warmup: int,
    iters: int,
) -> dict:
    config = build_retrain_config(protocol, {"network": network} if network else None)
    torch.manual_seed(0)
    model = build_network("darts", DARTS_V2, config, classes)
    model.drop_path_prob = 0.1
    model = model.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model.train()
    optimizer = make_optimizer(model, config)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    x = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, classes, (batch,), device=device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(warmup + iters):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss, _ = train_step(model, x, y, criterion=criterion, optimizer=optimizer, config=config, amp=amp)
        if cuda:
            torch.cuda.synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)} in {protocol} amp={amp} channels_last={channels_last}")
    median = statistics.median(times)
    row = {
        "protocol": protocol,
        "batch": batch,
        "resolution": resolution,
        "network": dict(config.network),
        "bf16_amp": amp,
        "channels_last": channels_last,
        "iters": iters,
        "median_step_ms": 1000 * median,
        "min_step_ms": 1000 * min(times),
        "images_per_s": batch / median,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }
    del model, optimizer, x, y
    if cuda:
        torch.cuda.empty_cache()
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| network | batch | input | bf16 AMP | channels_last | median ms/step | images/s | peak GB |",
        "|---|---:|---:|:---:|:---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | {r['batch']} | {r['resolution']} | {r['bf16_amp']} | "
                         f"{r['channels_last']} | skipped ({r['skipped']}) | | |")  # fmt: skip
            continue
        peak = "" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f}"
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['resolution']} | {'yes' if r['bf16_amp'] else 'no'} | "
            f"{'yes' if r['channels_last'] else 'no'} | {r['median_step_ms']:.1f} | {r['images_per_s']:.0f} | {peak} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON output path")
    parser.add_argument("--smoke", action="store_true", help="tiny networks, 1+2 steps: a CPU check that it runs")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5; smoke 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default 20; smoke 2)")
    parser.add_argument("--networks", default="cifar,imagenet", help="which networks, in this order")
    parser.add_argument("--budget-s", type=float, default=TIME_BUDGET_S, help="skip what is left after this")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.networks.split(",")) - set(NETWORKS))
    if unknown:
        parser.error(f"unknown network {unknown[0]!r}; choose from {', '.join(NETWORKS)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.smoke:
        parser.error("no GPU: run with --smoke for the CPU check, or pass --device")
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    iters = args.iters if args.iters is not None else (2 if args.smoke else 20)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.time()
    rows = []
    for name, protocol, batch, resolution, classes, network in (NETWORKS[n] for n in args.networks.split(",")):
        if args.smoke:
            batch, resolution, classes, network = SMOKE[protocol]
            name = f"{name} (smoke: {network})"
        for amp, channels_last in VARIANTS:
            base = {"name": name, "batch": batch, "resolution": resolution, "bf16_amp": amp}
            base["channels_last"] = channels_last
            if time.time() - started > args.budget_s:
                rows.append({**base, "skipped": "time budget"})
                continue
            try:
                row = bench_one(
                    protocol,
                    batch,
                    resolution,
                    classes,
                    network,
                    amp=amp,
                    channels_last=channels_last,
                    device=device,
                    warmup=warmup,
                    iters=iters,
                )
            except torch.cuda.OutOfMemoryError:  # report it and measure the other variants
                torch.cuda.empty_cache()
                rows.append({**base, "skipped": "out of memory"})
                print(f"{name}: amp={amp} channels_last={channels_last} out of memory", flush=True)
                continue
            rows.append({**base, **row})
            print(f"{name}: amp={amp} channels_last={channels_last} {row['images_per_s']:.0f} img/s", flush=True)
    table = markdown(rows)
    print(table)
    payload = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "smoke": args.smoke,
        "seconds": time.time() - started,
        "rows": rows,
        "markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
