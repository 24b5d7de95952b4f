"""Search-step time, images/s, peak memory and strength-bookkeeping overhead at the presets' sizes.

Times the real hot path, ``SearchStep.train_step`` (one architecture step + one weight step), on synthetic
32x32 batches of each preset's batch size. Each space runs in a fresh subprocess so that its peak memory
(CPU: peak RSS; CUDA: ``max_memory_allocated``) is its own.

    python benchmarks/bench_supernet.py                       # CPU, the three paper presets
    python benchmarks/bench_supernet.py --device cuda --amp bf16 --channels-last
    python benchmarks/bench_supernet.py --presets nb201-cifar10 --iters 5 --json out.json
    python benchmarks/bench_supernet.py --presets darts-cifar10 --set "space_kwargs={C: 8, layers: 5}"

Strength overhead = (median step time) - (median step time with the accumulator's ``add`` replaced by a
no-op), over the median step time; the accumulator's ``add`` is also timed alone.

Seed groups (``--groups 1,5``): per preset, one seed alone and K seeds batched as one group
(``SearchStep.train_step`` for K = 1 and K, :mod:`ostr_ray.core.step`), each K with its own peak memory; images/s
count every seed's train and validation batch. ``--compile MODE`` sets ``SearchConfig.compile`` (CUDA only),
``--bf16-tau`` adds the Kendall tau between one batch's strength under bf16 autocast and under fp32
(:func:`ostr_ray.core.precision.strength_at`).

    python benchmarks/bench_supernet.py --device cuda --groups 1,5 --bf16-tau --iters 5 --warmup 2
    python benchmarks/bench_supernet.py --device cuda --presets nb201-cifar10 --groups 1,5 --compile default
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import time

PRESETS = ("nb201-cifar10", "darts-cifar10", "pcdarts-cifar10")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_step(step, batches, iters: int, warmup: int) -> float:
    """Median seconds of ``step.train_step`` (a :class:`~ostr_ray.core.step.SearchStep`) on stacked batches."""
    train, val = batches
    for _ in range(warmup):
        step.train_step(train, val)
    _sync(step.device.type)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        totals, _ = step.train_step(train, val)
        totals.sum().item()  # wait for the device, as the end of a step in steady state would
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    preset: str, device: str, amp: str, channels_last: bool, iters: int, warmup: int, sets: list[str] | None = None
) -> dict:
    import torch

    from ostr_ray.core.memory import estimate_search_memory
    from ostr_ray.core.search import Searcher
    from ostr_ray.core.step import stack_batches

    config = _config(preset, device, sets, amp=amp, channels_last=channels_last)
    estimate = estimate_search_memory(config)  # the memory guard's prediction, to set beside the measured peak
    searcher = Searcher(config)
    runner = searcher.step()
    batches = (stack_batches([next(searcher.data.train.epoch(0))]), stack_batches([next(searcher.data.val.epoch(0))]))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step = _median_step(runner, batches, iters, warmup)
    real_add = runner.accumulator.add
    runner.accumulator.add = lambda *a, **k: None
    step_without = _median_step(runner, batches, iters, warmup=1)
    runner.accumulator.add = real_add
    add_alone = _time_accumulator_add(searcher)
    peak = (
        torch.cuda.max_memory_allocated()
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    images = 2 * config.batch_size  # a train and a validation batch per step
    return {
        "preset": preset,
        "space": config.space,
        "batch_size": config.batch_size,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "amp": amp,
        "channels_last": channels_last,
        "step_s": step,
        "images_per_s": images / step,
        "peak_mem_mib": peak / 2**20,
        "guard_estimate_mib": estimate.total_bytes / 2**20,
        "strength_overhead_pct": 100 * (step - step_without) / step,
        "accumulator_add_ms": 1000 * add_alone,
        "accumulator_add_pct": 100 * add_alone / step,
    }


def _config(preset: str, device: str, sets: list[str] | None, **settings):
    """The preset on synthetic data at its resolution (32x32 unless it sets image_size: the ImageNet presets'
    224), one batch per half, in memory, architecture steps from the first step."""
    from ostr_ray.core.config import build_config, parse_override

    overrides = dict(parse_override(text) for text in sets or [])
    base = build_config(preset, {"data_dir": "/unused", **overrides})
    return build_config(
        preset,
        {
            **overrides,
            "dataset": "synthetic",
            "data_path": "memory",
            "augment": "pad_crop",
            "subset_fraction": None,
            "train_fraction": 0.5,
            "image_size": base.image_size or 32,
            "train_size": base.batch_size,
            "val_size": base.batch_size,
            "device": device,
            "arch_start_epoch": 0,
            **settings,
        },
    )


def measure_groups(
    preset: str, device: str, groups: list[int], iters: int, warmup: int, sets: list[str] | None, compile_mode: str
) -> list[dict]:
    """s/step of one seed alone (K = 1) and of K seeds as one batched group, each K with its own peak memory."""
    import torch

    from ostr_ray.core.search import SeedGroupSearcher
    from ostr_ray.core.step import SearchStep, stack_batches

    config = _config(preset, device, sets, compile=compile_mode)
    rows: list[dict] = []
    for seeds in groups:
        gc.collect()  # free the last K's supernets before measuring this K's peak memory
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            members = SeedGroupSearcher.from_seeds(config, list(range(seeds))).members
            runner = SearchStep(members)  # K = 1 is the same step over one seed
            own = [(next(m.data.train.epoch(0)), next(m.data.val.epoch(0))) for m in members]
            batches = (stack_batches([t for t, _ in own]), stack_batches([v for _, v in own]))
            step = _median_step(runner, batches, iters, warmup)
        except RuntimeError as err:  # out of memory, or a compile failure: keep the other sizes' rows
            rows.append({"preset": preset, "seeds": seeds, "compile": compile_mode, "error": str(err).splitlines()[0]})
            continue
        peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else math.nan
        rows.append(
            {
                "preset": preset,
                "batch_size": config.batch_size,
                "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                "threads": torch.get_num_threads(),
                "seeds": seeds,
                "compile": compile_mode,
                "step_s": step,
                "per_seed_step_s": step / seeds,
                "images_per_s": seeds * 2 * config.batch_size / step,
                "vs_one_seed_alone": _vs_alone(rows, seeds, step),
                "peak_mem_mib": peak / 2**20,
            }
        )
        del runner, batches
    return rows


def _vs_alone(rows: list[dict], seeds: int, step: float) -> float | None:
    """K seeds one after another at the one-seed step time, over the K-seed group's step: > 1 = group faster."""
    alone = next((r["step_s"] for r in rows if r["seeds"] == 1 and "step_s" in r), None)
    return alone * seeds / step if alone else None


def bf16_tau(preset: str, device: str, sets: list[str] | None) -> dict:
    """Kendall tau (scipy's tau-b) between one batch's strength under bf16 autocast and under fp32, per cell
    type, at the preset's size; an error (a space whose ops refuse mixed dtypes) is reported, not raised."""
    import torch
    from scipy.stats import kendalltau

    from ostr_ray.core.precision import strength_at
    from ostr_ray.core.search import Searcher

    searcher = Searcher(_config(preset, device, sets))
    x, y = next(searcher.data.val.epoch(0))
    try:
        fp32, bf16 = strength_at(searcher, x, y, None), strength_at(searcher, x, y, torch.bfloat16)
    except RuntimeError as err:
        return {"preset": preset, "bf16_tau": None, "error": str(err).splitlines()[0]}
    taus = {cell: float(kendalltau(fp32[cell].flatten(), bf16[cell].flatten()).statistic) for cell in fp32}
    return {"preset": preset, "bf16_tau": min(taus.values()), "per_cell": taus}


def _time_accumulator_add(searcher, repeats: int = 50) -> float:
    import torch

    alphas = {c: a.detach() for c, a in searcher.model.alphas.items()}
    betas = {c: torch.softmax(a, -1) for c, a in alphas.items()}
    grads = {c: torch.randn_like(a) for c, a in alphas.items()}
    _sync(searcher.device.type)
    start = time.perf_counter()
    for _ in range(repeats):
        searcher.accumulator.add(grads, betas, grads)
    _sync(searcher.device.type)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="Also write the rows as JSON to this file.")
    parser.add_argument(
        "--set",
        action="append",
        dest="sets",
        metavar="KEY=VALUE",
        help="Override a preset setting (YAML value), e.g. --set batch_size=16; repeatable.",
    )
    parser.add_argument(
        "--grid", action="store_true", help="Every amp (off, bf16) x channels_last (off, on) combination (GPU check)."
    )
    parser.add_argument(
        "--groups", default=None, help="Seed-group sizes, e.g. 1,5: one seed alone vs K seeds batched in one group."
    )
    parser.add_argument("--compile", default="off", help="SearchConfig.compile for the --groups runs (CUDA only).")
    parser.add_argument("--bf16-tau", action="store_true", help="With --groups: strength ranking bf16 vs fp32.")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one preset, JSON lines
    args = parser.parse_args()
    combos = [(a, c) for a in ("off", "bf16") for c in (False, True)] if args.grid else [(args.amp, args.channels_last)]
    if args.one:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.groups:
            groups = [int(k) for k in args.groups.split(",")]
            for row in measure_groups(args.one, args.device, groups, args.iters, args.warmup, args.sets, args.compile):
                print(json.dumps(row), flush=True)
            if args.bf16_tau:
                print(json.dumps(bf16_tau(args.one, args.device, args.sets)), flush=True)
            return
        for amp, channels_last in combos:
            print(
                json.dumps(measure(args.one, args.device, amp, channels_last, args.iters, args.warmup, args.sets)),
                flush=True,
            )
        return
    rows = []
    for preset in args.presets.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            preset,
            "--device",
            args.device,
            "--amp",
            args.amp,
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
        ]
        cmd += ["--channels-last"] if args.channels_last else []
        cmd += ["--grid"] if args.grid else []
        cmd += ["--groups", args.groups, "--compile", args.compile] if args.groups else []
        cmd += ["--bf16-tau"] if args.bf16_tau else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += [arg for text in args.sets or [] for arg in ("--set", text)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows += [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
        print(f"measured {preset}", file=sys.stderr, flush=True)
        if args.json:  # after every preset, so a run cut short by a time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    if args.groups:
        _print_groups(rows)
        return
    print("| preset | batch | device | amp | channels_last | step (s) | images/s | peak MiB | strength overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['batch_size']} | {r['device_name']} ({r['threads']} thr) | {r['amp']} | "
            f"{r['channels_last']} | {r['step_s']:.4f} | {r['images_per_s']:.0f} | {r['peak_mem_mib']:.0f} | "
            f"{r['accumulator_add_pct']:.3f}% (add alone), {r['strength_overhead_pct']:+.2f}% (A/B) |"
        )


def _print_groups(rows: list[dict]) -> None:
    taus = {r["preset"]: r for r in rows if "bf16_tau" in r}
    print(
        "| preset | batch | device | seeds | compile | step (s) | s per seed | images/s | vs 1 seed alone | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "seeds" not in r:
            continue
        if "error" in r:
            print(f"| {r['preset']} | | | {r['seeds']} | {r['compile']} | failed: {r['error']} | | | | |")
            continue
        speedup = f"{r['vs_one_seed_alone']:.2f}x" if r["vs_one_seed_alone"] else "-"
        print(
            f"| {r['preset']} | {r['batch_size']} | {r['device_name']} ({r['threads']} thr) | {r['seeds']} | "
            f"{r['compile']} | {r['step_s']:.4f} | {r['per_seed_step_s']:.4f} | {r['images_per_s']:.0f} | {speedup} | "
            f"{'-' if math.isnan(r['peak_mem_mib']) else round(r['peak_mem_mib'])} |"
        )
    for preset, r in taus.items():
        found = f"{r['bf16_tau']:.3f} (per cell {r['per_cell']})" if r["bf16_tau"] is not None else r["error"]
        print(f"bf16 vs fp32 strength ranking, Kendall tau, {preset}: {found}")


if __name__ == "__main__":
    main()
