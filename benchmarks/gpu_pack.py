"""Aggregate throughput of N NB201 seeds sharing one GPU (N = 1, 2, 4, 5).

Each seed is a separate ``ostr-ray search`` process on the same GPU, which is what a Tune trial with
``--gpus-per-trial 1/N`` is (Ray only sets CUDA_VISIBLE_DEVICES and packs the processes; it does not
share kernels). Run this through ``ostr-ray launch --gpus-per-trial`` where Ray is installed; the GPU check
machine has no Ray, so this script starts the processes itself.

    python benchmarks/gpu_pack.py [--seeds 1,2,4,5] [--steps 40] [--json out.json]

Aggregate images/s = sum over the seeds of the last epoch's images/s (train + validation images).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_packed(n: int, steps: int, epochs: int, amp: str, device: str = "cuda") -> dict:
    size = 64 * steps
    settings = {"dataset": "synthetic", "image_size": 32, "train_size": size, "val_size": size,
                "epochs": epochs, "device": device, "amp": amp, "patience": 0}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        start = time.perf_counter()
        for seed in range(n):
            cmd = [sys.executable, "-m", "ostr_ray.cli", "search", "--preset", "nb201-cifar10", "--seed", str(seed),
                   "--out", f"{tmp}/s{seed}", "--quiet", "--set", "data_dir=/unused"]
            for key, value in settings.items():
                cmd += ["--set", f"{key}={value}"]
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)}))
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"seed process failed: {err[-2000:]}")
        wall = time.perf_counter() - start
        last = [json.loads(Path(f"{tmp}/s{s}/report.json").read_text())["history"][-1] for s in range(n)]
    per_seed = [h["images_per_s"] for h in last]
    return {"seeds": n, "amp": amp, "aggregate_images_per_s": sum(per_seed), "per_seed_images_per_s": per_seed,
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,4,5")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [run_packed(int(n), args.steps, args.epochs, args.amp, args.device) for n in args.seeds.split(",")]
    base = rows[0]["aggregate_images_per_s"]
    print("| seeds on one GPU | aggregate images/s | per seed | vs 1 seed |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seeds']} | {r['aggregate_images_per_s']:.0f} | "
              f"{r['aggregate_images_per_s'] / r['seeds']:.0f} | {r['aggregate_images_per_s'] / base:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
