"""What Ray costs and what side-by-side seeds buy, on this machine.

    python benchmarks/bench_launch.py [--preset demo] [--epochs 4] [--repeats 1] [--set key=value] [--json out.json]

Each configuration runs as a fresh command line, as a user would run it; medians over ``--repeats``:

1. one seed in-process (``ostr-ray search``) and through ``ostr-ray launch``: the launch's fixed overhead is
   the difference (Ray start and stop, trial spawn and imports, MLflow store, reports);
2. two seeds side by side (two trials, 1 CPU each) and in sequence (one trial at a time with 2 threads);
   the 2-seed scaling is the search work per second of two seeds side by side over one seed's, overhead
   taken out of both (2.0 = perfect);
3. five seeds on two trial slots, and the same five as one batched seed group (``--seeds-per-trial 5``);
4. one seed against an already running local cluster (``ray start --head``, then ``--address auto``): the
   overhead left when Ray is not started and stopped per launch.
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
OSTR = str(BIN / "ostr-ray")


def _timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _epoch_seconds(launch_dir: Path) -> float:
    """Median epoch time of a launch's seeds, from their search records (what one epoch costs a trial)."""
    from ostr_ray.experiment import SearchDir

    records = [SearchDir(folder).read_record() for folder in sorted(launch_dir.glob("*-seed*")) if folder.is_dir()]
    return statistics.median(r.epoch_seconds for rec in records for r in rec.result.history)


def _launches(tmp: str, common: list[str], rows: dict[str, list[float]], tag: str) -> None:
    launch = [OSTR, "launch", *common, "--storage", tmp, "--quiet", "--no-experiment-stop"]
    rows["launch_1"].append(_timed([*launch, "--seeds", "1", "--name", f"one{tag}"]))
    rows["epoch_s_1_trial"].append(_epoch_seconds(Path(tmp) / f"one{tag}"))
    rows["side_by_side_2"].append(_timed([*launch, "--seeds", "2", "--name", f"side{tag}"]))
    rows["epoch_s_2_trials"].append(_epoch_seconds(Path(tmp) / f"side{tag}"))
    rows["sequence_2"].append(_timed([*launch, "--seeds", "2", "--cpus-per-trial", "2", "--name", f"seq{tag}"]))
    rows["five_on_two_slots"].append(_timed([*launch, "--seeds", "5", "--name", f"five{tag}"]))
    rows["five_as_one_group"].append(
        _timed([*launch, "--seeds", "5", "--seeds-per-trial", "5", "--cpus-per-trial", "2", "--name", f"grp{tag}"])
    )


def _reused_cluster(tmp: str, common: list[str]) -> float:
    """One seed through ``--address auto`` against a head started once (its start is not timed)."""
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--num-cpus", "2", "--include-dashboard", "false"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        launch = [OSTR, "launch", *common, "--storage", tmp, "--quiet", "--address", "auto"]
        return _timed([*launch, "--seeds", "1", "--name", f"reuse{time.time_ns()}"])
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(preset: str, epochs: int, repeats: int, sets: list[str] | None = None) -> dict:
    keys = (
        "search_1",
        "launch_1",
        "side_by_side_2",
        "sequence_2",
        "five_on_two_slots",
        "five_as_one_group",
        "reused",
        "epoch_s_1_trial",
        "epoch_s_2_trials",
    )
    rows: dict[str, list[float]] = {k: [] for k in keys}
    common = ["--preset", preset, "--set", f"epochs={epochs}", "--set", "patience=0"]
    for text in sets or []:
        common += ["--set", text]
    with tempfile.TemporaryDirectory() as tmp:  # untimed: fills the decoded-image cache every run then reads
        _timed([OSTR, "search", *common, "--set", "epochs=1", "--out", str(Path(tmp) / "warm"), "--quiet"])
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "search"
            search = [OSTR, "search", *common, "--seed", "0", "--threads", "1", "--out", str(out), "--quiet"]
            rows["search_1"].append(_timed(search))
            _launches(tmp, common, rows, str(repeat))
            rows["reused"].append(_reused_cluster(tmp, common))
    wall = {k: statistics.median(v) for k, v in rows.items()}
    overhead = wall["launch_1"] - wall["search_1"]
    work_1, work_2 = wall["launch_1"] - overhead, wall["side_by_side_2"] - overhead
    return {
        "preset": preset,
        "epochs": epochs,
        "repeats": repeats,
        "wall_s": wall,
        "fixed_overhead_s": overhead,
        "reused_cluster_overhead_s": wall["reused"] - wall["search_1"],
        "two_seed_scaling": 2 * work_1 / work_2 if work_2 > 0 else float("nan"),
        "sequence_over_side_by_side": wall["sequence_2"] / wall["side_by_side_2"],
        "group_over_five_trials": wall["five_as_one_group"] / wall["five_on_two_slots"],
    }


LABELS = {
    "search_1": "1 seed, `ostr-ray search` in-process",
    "launch_1": "1 seed, `ostr-ray launch` (Ray started and stopped)",
    "reused": "1 seed, `ostr-ray launch --address auto` on a running cluster",
    "side_by_side_2": "2 seeds side by side (2 trials, 1 CPU each)",
    "sequence_2": "2 seeds in sequence (1 trial at a time, 2 CPUs)",
    "five_on_two_slots": "5 seeds, 5 trials on 2 slots",
    "five_as_one_group": "5 seeds as one batched group (`--seeds-per-trial 5`, 2 CPUs)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--set", action="append", default=[], help="A setting for every run (key=value).")
    args = parser.parse_args()
    result = run(args.preset, args.epochs, args.repeats, args.set)
    print(f"| configuration ({args.preset}, {args.epochs} epochs, median of {args.repeats}) | wall s |")
    print("|---|---|")
    for key, label in LABELS.items():
        print(f"| {label} | {result['wall_s'][key]:.1f} |")
    print(
        f"\nfixed overhead of a launch: {result['fixed_overhead_s']:.1f} s "
        f"({result['reused_cluster_overhead_s']:.1f} s on a running cluster); "
        f"2-seed scaling {result['two_seed_scaling']:.2f}x (2.0 = perfect); "
        f"sequence / side by side {result['sequence_over_side_by_side']:.2f}x; "
        f"batched group / 5 trials {result['group_over_five_trials']:.2f}x; "
        f"epoch of a trial: {result['wall_s']['epoch_s_1_trial']:.1f} s alone, "
        f"{result['wall_s']['epoch_s_2_trials']:.1f} s with 2 trials side by side"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
