"""What Ray costs and what side-by-side seeds buy, on this machine.

1. One seed through ``ostr-ray launch`` against the same search in-process (``ostr-ray search``):
   wall time of the whole command, Ray start-up included, and the search's own epoch time.
2. Two seeds side by side (two trials, 1 CPU and 1 torch thread each) against two in sequence
   (``--cpus-per-trial 2``: one trial at a time with 2 threads), both through ``ostr-ray launch``.

    python benchmarks/bench_launch.py [--preset demo] [--epochs 4] [--repeats 1] [--json out.json]

Each configuration runs as a fresh command line (as a user would run it); medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _search_epoch_seconds(report_json: Path) -> float:
    history = json.loads(report_json.read_text())["history"]
    return statistics.median(h["epoch_seconds"] for h in history)


def run(preset: str, epochs: int, repeats: int) -> dict:
    rows: dict[str, list[float]] = {"search_1": [], "launch_1": [], "side_by_side_2": [], "sequence_2": []}
    epoch_seconds = []
    common = ["--preset", preset, "--set", f"epochs={epochs}", "--set", "patience=0"]
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "search"
            rows["search_1"].append(
                _timed(
                    [
                        str(BIN / "ostr-ray"),
                        "search",
                        *common,
                        "--seed",
                        "0",
                        "--threads",
                        "1",
                        "--out",
                        str(out),
                        "--quiet",
                    ]
                )
            )
            epoch_seconds.append(_search_epoch_seconds(out / "report.json"))
            launch = [str(BIN / "ostr-ray"), "launch", *common, "--storage", tmp, "--quiet", "--no-experiment-stop"]
            rows["launch_1"].append(_timed([*launch, "--seeds", "1", "--name", "one"]))
            rows["side_by_side_2"].append(_timed([*launch, "--seeds", "2", "--name", "side"]))
            rows["sequence_2"].append(_timed([*launch, "--seeds", "2", "--cpus-per-trial", "2", "--name", "seq"]))
    medians = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "preset": preset,
        "epochs": epochs,
        "repeats": repeats,
        "wall_s": medians,
        "in_process_epoch_s": statistics.median(epoch_seconds),
        "launch_over_search": medians["launch_1"] / medians["search_1"],
        "sequence_over_side_by_side": medians["sequence_2"] / medians["side_by_side_2"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run(args.preset, args.epochs, args.repeats)
    w = result["wall_s"]
    print(f"| configuration ({args.preset}, {args.epochs} epochs) | wall s |")
    print("|---|---|")
    for key, label in (
        ("search_1", "1 seed, `ostr-ray search` in-process"),
        ("launch_1", "1 seed, `ostr-ray launch`"),
        ("side_by_side_2", "2 seeds side by side (1 CPU each)"),
        ("sequence_2", "2 seeds in sequence (2 CPUs each)"),
    ):
        print(f"| {label} | {w[key]:.1f} |")
    print(
        f"\nlaunch / in-process: {result['launch_over_search']:.2f}x; "
        f"sequence / side-by-side: {result['sequence_over_side_by_side']:.2f}x; "
        f"in-process epoch: {result['in_process_epoch_s']:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
