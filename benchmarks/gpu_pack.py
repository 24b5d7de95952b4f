"""Aggregate throughput of N NB201 seeds sharing one GPU (N = 1, 2, 4, 5).

Two ways to pack the seeds, the same measurement:

- ``--via launch`` (the default where Ray is installed): one ``ostr-ray launch --seeds N --gpus-per-trial 1/N``,
  i.e. N Ray Tune trials with fractional GPUs on one card, exactly what a user runs. Each launch also pays
  Ray's start-up and the MLflow record; that is in ``wall_s`` but not in the images/s, which are the trials'.
- ``--via processes`` (the default without Ray, e.g. on the GPU check machine, whose Python has no Ray):
  N ``ostr-ray search`` processes started together on the same GPU. This is what fractional-GPU trials
  amount to on the card: Ray only sets ``CUDA_VISIBLE_DEVICES`` and schedules the processes side by side;
  it does not share kernels or memory between them.

    python benchmarks/gpu_pack.py [--seeds 1,2,4,5] [--steps 40] [--via launch|processes] [--json out.json]
    python benchmarks/gpu_pack.py --device cpu --seeds 1,2 --steps 4 --batch 8   # CPU smoke check of the path

Aggregate images/s = sum over the seeds of their last epoch's images/s (train + validation images): the
first epoch includes cuDNN autotuning and start-up, so at least 2 epochs are run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESET = "nb201-cifar10"


def search_settings(steps: int, batch: int, epochs: int, device: str, amp: str) -> dict[str, object]:
    """Synthetic 32x32 data sized to ``steps`` minibatches per epoch, no early stop: only the speed counts."""
    size = batch * steps
    return {
        "dataset": "synthetic",
        "image_size": 32,
        "train_size": size,
        "val_size": size,
        "batch_size": batch,
        "epochs": epochs,
        "device": device,
        "amp": amp,
        "patience": 0,
        "data_dir": "/unused",
    }


def _child_env() -> dict[str, str]:
    """The seed processes import this checkout, installed or not."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _set_flags(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env())
    if done.returncode:
        raise SystemExit(f"{what} failed (exit {done.returncode}): {done.stderr[-2000:]}")


def pack_with_launch(n: int, settings: dict[str, object], gpu: bool, cpus: int, tmp: str) -> list[dict]:
    """N seeds as N Tune trials of one ``ostr-ray launch``; returns each trial's last epoch report."""
    cmd = [
        sys.executable,
        "-m",
        "ostr_ray.cli",
        "launch",
        "--preset",
        PRESET,
        "--seeds",
        str(n),
        "--storage",
        tmp,
        "--name",
        "pack",
        "--quiet",
        "--max-failures",
        "0",
        "--no-seed-stop",
        "--no-experiment-stop",
        "--cpus-per-trial",
        str(max(1, cpus // n)),
        "--gpus-per-trial",
        str(round(1 / n, 4) if gpu else 0),
        *_set_flags(settings),
    ]
    _run(cmd, f"ostr-ray launch of {n} seeds")
    history = json.loads(Path(tmp, "pack", "history.json").read_text())
    return [trial["reports"][-1] for trial in history["trials"]]


def pack_with_processes(n: int, settings: dict[str, object], cpus: int, tmp: str) -> list[dict]:
    """N ``ostr-ray search`` processes started together, each with its share of the CPUs as torch threads
    (as a trial's ``--cpus-per-trial`` gives it); returns each one's last epoch report."""
    procs = []
    for seed in range(n):
        cmd = [
            sys.executable,
            "-m",
            "ostr_ray.cli",
            "search",
            "--preset",
            PRESET,
            "--seed",
            str(seed),
            "--out",
            f"{tmp}/s{seed}",
            "--quiet",
            *_set_flags({**settings, "threads": max(1, cpus // n)}),
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env()
            )
        )
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"seed process failed (exit {proc.returncode}): {err[-2000:]}")
    return [json.loads(Path(f"{tmp}/s{s}/report.json").read_text())["history"][-1] for s in range(n)]


def measure(n: int, via: str, settings: dict[str, object], cpus: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if via == "launch":
            last = pack_with_launch(n, settings, gpu=str(settings["device"]).startswith("cuda"), cpus=cpus, tmp=tmp)
        else:
            last = pack_with_processes(n, settings, cpus, tmp)
        wall = time.perf_counter() - start
    per_seed = [report["images_per_s"] for report in last]
    return {
        "seeds": n,
        "via": via,
        "amp": settings["amp"],
        "batch": settings["batch_size"],
        "aggregate_images_per_s": sum(per_seed),
        "per_seed_images_per_s": per_seed,
        "epoch_seconds": [report["epoch_seconds"] for report in last],
        "wall_s": wall,
    }


def markdown(rows: list[dict]) -> str:
    base = rows[0]["aggregate_images_per_s"] / rows[0]["seeds"]
    lines = [
        "| seeds on one GPU | via | aggregate images/s | per seed | vs 1 seed alone | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        agg = r["aggregate_images_per_s"]
        lines.append(
            f"| {r['seeds']} | {r['via']} | {agg:.0f} | {agg / r['seeds']:.0f} | {agg / base:.2f}x | "
            f"{r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    has_ray = importlib.util.find_spec("ray") is not None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,4,5", help="comma list of seed counts to pack")
    parser.add_argument("--steps", type=int, default=40, help="minibatches per epoch (train; val the same)")
    parser.add_argument("--batch", type=int, default=64, help="the preset's batch size by default")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is measured (>= 2)")
    parser.add_argument("--amp", default="auto", help="auto (fp32), bf16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--via", choices=("launch", "processes"), default="launch" if has_ray else "processes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.seeds.split(",")]
    if args.epochs < 2 or min(counts) < 1:
        parser.error(f"--epochs must be >= 2 and seed counts >= 1 (got {args.epochs}, {args.seeds})")
    if args.via == "launch" and not has_ray:
        parser.error("--via launch needs Ray (pip install -e . installs it); or use --via processes")
    settings = search_settings(args.steps, args.batch, args.epochs, args.device, args.amp)
    rows = []
    for n in counts:
        rows.append(measure(n, args.via, settings, os.cpu_count() or 1))
        print(f"{n} seeds: {rows[-1]['aggregate_images_per_s']:.0f} images/s aggregate", flush=True)
        if args.json:  # after every row, so a run cut short by a time limit keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
