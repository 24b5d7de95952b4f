"""Seed-batched search step vs the same seeds one after another, on CPU threads.

K seeds of the NB201 CPU proxy (``nb201-cifar10-proxy``: C=8, N=5, batch 64, 16x16; synthetic images here)
as one seed group (``SearchStep.train_step`` over K seeds: one batched architecture + weight step for all K) vs
the same step over each seed alone (K = 1), K calls in sequence on the same batches. Group and sequence
alternate step by step, so drift of a shared machine hits both alike; the figure is the median over the timed
steps.

    python benchmarks/bench_batched.py                       # threads 1,2 x K 2,5
    python benchmarks/bench_batched.py --threads 1 --seeds 2,5 --iters 5 --warmup 1
    python benchmarks/bench_batched.py --json out.json

ratio = (K singles in sequence) / (one group step): above 1 the group is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

PRESET = "nb201-cifar10-proxy"


def _machine() -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def measure(seeds: int, threads: int, iters: int, warmup: int) -> dict:
    import torch

    from ostr_ray.core.config import build_config
    from ostr_ray.core.search import SeedGroupSearcher
    from ostr_ray.core.step import SearchStep, stack_batches

    torch.set_num_threads(threads)
    base = build_config(PRESET)
    config = build_config(
        PRESET,
        {
            "dataset": "synthetic",
            "data_dir": None,
            "train_size": base.batch_size,
            "val_size": base.batch_size,
            "threads": threads,
            "device": "cpu",
        },
    )
    group = SeedGroupSearcher.from_seeds(config, list(range(seeds)))
    members = group.members
    torch.set_num_threads(threads)  # the members' construction set it from the config; the same number
    stack = SearchStep(members)
    own = [(next(m.data.train.epoch(0)), next(m.data.val.epoch(0))) for m in members]
    stacked = (stack_batches([t for t, _ in own]), stack_batches([v for _, v in own]))
    singles = [SearchStep([member]) for member in members]
    own_stacked = [(stack_batches([train]), stack_batches([val])) for train, val in own]

    def group_step() -> None:
        totals, _ = stack.train_step(*stacked)
        totals.sum().item()

    def singles_step() -> None:
        for single, (train, val) in zip(singles, own_stacked):
            totals, _ = single.train_step(train, val)
            totals.sum().item()

    for _ in range(warmup):
        group_step()
        singles_step()
    group_times, singles_times = [], []
    for _ in range(iters):
        for step, times in ((group_step, group_times), (singles_step, singles_times)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    group_s, singles_s = statistics.median(group_times), statistics.median(singles_times)
    return {
        "seeds": seeds,
        "threads": threads,
        "batch_size": config.batch_size,
        "group_step_s": group_s,
        "singles_step_s": singles_s,
        "ratio": singles_s / group_s,
        "group_images_per_s": seeds * 2 * config.batch_size / group_s,
        "singles_images_per_s": seeds * 2 * config.batch_size / singles_s,
        "iters": iters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="Comma-separated torch thread counts.")
    parser.add_argument("--seeds", default="2,5", help="Comma-separated group sizes K.")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default=None, help="Also write the rows as JSON to this file.")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {_machine()}")
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for seeds in (int(k) for k in args.seeds.split(",")):
            rows.append(measure(seeds, threads, args.iters, args.warmup))
            print(f"measured K={seeds}, {threads} thread(s)", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    print(f"NB201 proxy (C=8, N=5, 16x16, batch 64): median of {args.iters} steps after {args.warmup} warm-up")
    print("| threads | K | group step (s) | K singles (s) | ratio | group img/s | singles img/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']} | {r['seeds']} | {r['group_step_s']:.3f} | {r['singles_step_s']:.3f} | "
            f"{r['ratio']:.2f}x | {r['group_images_per_s']:.0f} | {r['singles_images_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
