"""The search's two data paths on a generated 224px JPEG tree: streamed throughput, and memory of each path.

1. Throughput of the streamed loader (:class:`ostr_ray.data.StreamedBatchStream`: JPEG decode +
   RandomResizedCrop(224) + flip, PC-DARTS' ImageNet search transform) with 1 and 2 decode workers:
   images/s, median of ``--passes`` timed epochs after one warm-up epoch.
2. Peak memory of building one seed's search data and reading one epoch of both streams, streamed vs in
   memory (``data_path: stream`` / ``memory``), each in a fresh process with a fresh decoded-image cache.
   The process tree (the search process and its DataLoader workers) is sampled from /proc every 50 ms:
   peak summed RSS, and peak summed PSS, which counts pages the forked workers share with their parent
   once; plus the search process's own VmHWM (exact, not sampled).
3. With ``--launch``: ``ostr-ray launch --seeds 3`` on the tree for both data paths (tiny NB201 supernet,
   1 epoch), sampling the whole process tree of the command (Ray's own processes and every trial).

    python benchmarks/bench_data.py [--images 1500] [--memory-images 1500,3000] [--classes 10] [--batch 64]
                                    [--passes 3] [--repeats 1] [--launch] [--json out.json]

Figures are medians over ``--repeats`` runs; timings on a shared machine are noisy, memory figures are not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MIB = 2**20


# ----------------------------------------------------------------------------------------- the tree


def write_tree(root: Path, images: int, classes: int, size: int) -> Path:
    """``images`` JPEGs of ``size x size`` in ``classes`` folders: smooth colour fields plus grain, quality 90
    (about the bytes per pixel of ImageNet's JPEGs)."""
    from torchvision.io import write_jpeg

    g = torch.Generator().manual_seed(0)
    for i in range(images):
        folder = root / f"class{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = torch.rand(1, 3, 6, 6, generator=g)
        field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
        pixels = (field * 200 + 20 + torch.randn(3, size, size, generator=g) * 12).clamp(0, 255).to(torch.uint8)
        write_jpeg(pixels, str(folder / f"{i:06d}.jpg"), quality=90)
    return root


# ----------------------------------------------------------------------------------------- throughput


def throughput(tree: Path, batch: int, workers: int, passes: int) -> dict:
    from ostr_ray.data import StreamedBatchStream, scan_split

    stream = StreamedBatchStream(scan_split(tree, train=True), batch, seed=0, image_size=224, num_workers=workers)
    rates = []
    for epoch in range(passes + 1):  # epoch 0 warms the page cache and the workers' imports
        started = time.perf_counter()
        count = sum(len(y) for _, y in stream.epoch(epoch))
        if epoch:
            rates.append(count / (time.perf_counter() - started))
    return {"workers": workers, "images_per_s": statistics.median(rates), "passes": rates}


# ----------------------------------------------------------------------------------------- memory


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc/<pid>/task/*/children."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):  # the task or process ended meanwhile
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def _kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_sampled(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; every 50 ms sum RSS and PSS over its process tree. Returns peaks (MiB), wall time, stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        peak_rss = peak_pss = 0
        while proc.poll() is None:
            pids = _tree_pids(proc.pid)
            peak_rss = max(peak_rss, sum(_kib(f"/proc/{p}/status", "VmRSS") for p in pids))
            peak_pss = max(peak_pss, sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids))
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
        return {
            "peak_tree_rss_mib": peak_rss / 1024,
            "peak_tree_pss_mib": peak_pss / 1024,
            "wall_s": time.perf_counter() - started,
            "stdout": out.read(),
        }


def child(path: str, tree: Path, batch: int, workers: int) -> None:
    """In a fresh process: build one seed's search data on ``path`` and read one epoch of both streams
    (``baseline``: the same imports and config, no data: what every search process costs anyway)."""
    import torchvision.io  # noqa: F401 - both paths import it; the baseline must too
    from torchvision.transforms import v2  # noqa: F401

    from ostr_ray.core.config import build_config
    from ostr_ray.core.search_data import build_data

    torch.set_num_threads(1)
    settings = {"dataset": "imagefolder", "data_dir": str(tree), "image_size": 224, "batch_size": batch}
    settings.update(augment="random_resized_crop", crop_padding=0, loader_workers=workers)
    config = build_config(None, {**settings, "data_path": "auto" if path == "baseline" else path})
    seen = 0
    if path != "baseline":
        data = build_data(config, torch.device("cpu"))
        seen = sum(len(y) for stream in (data.train, data.val) for _, y in stream.epoch(0))
    hwm = _kib("/proc/self/status", "VmHWM") / 1024
    print(json.dumps({"images_read": seen, "search_process_hwm_mib": hwm}))


def memory(tree: Path, batch: int, workers: int, repeats: int) -> list[dict]:
    rows = []
    for path in ("baseline", "stream", "memory"):
        runs = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "OSTR_RAY_CACHE": cache, "PYTHONWARNINGS": "ignore"}
                cmd = [sys.executable, __file__, "--child", path, "--tree", str(tree), "--batch", str(batch)]
                cmd += ["--workers", str(workers)]
                sampled = run_sampled(cmd, env)
                runs.append({**sampled, **json.loads(sampled.pop("stdout").strip().splitlines()[-1])})
        keys = ("peak_tree_rss_mib", "peak_tree_pss_mib", "search_process_hwm_mib", "wall_s")
        rows.append({"data_path": path, **{k: statistics.median(r[k] for r in runs) for k in keys}})
    return rows


def launch(tree: Path, batch: int, repeats: int) -> list[dict]:
    """``ostr-ray launch --seeds 3`` on the tree for both data paths, whole command's process tree sampled."""
    rows = []
    for path in ("stream", "memory"):
        runs = []
        for r in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                sets = [
                    f"data_path={path}",
                    "image_size=224",
                    "augment=random_resized_crop",
                    "crop_padding=0",
                    f"batch_size={batch}",
                    f"train_size={batch * 2}",
                    f"val_size={batch * 2}",
                    "space_kwargs={C: 4, N: 1}",
                ]
                cmd = [str(BIN / "ostr-ray"), "launch", "--preset", "demo", "--seeds", "3", "--epochs", "1"]
                cmd += ["--dataset", "imagefolder", "--data-dir", str(tree), "--storage", tmp, "--name", f"{path}{r}"]
                cmd += ["--quiet", "--no-experiment-stop", "--patience", "0"]
                cmd += [arg for value in sets for arg in ("--set", value)]
                env = {**os.environ, "OSTR_RAY_CACHE": str(Path(tmp) / "cache")}
                sampled = run_sampled(cmd, env)
                sampled.pop("stdout")
                runs.append(sampled)
        keys = ("peak_tree_rss_mib", "peak_tree_pss_mib", "wall_s")
        rows.append({"data_path": path, **{k: statistics.median(r[k] for r in runs) for k in keys}})
    return rows


# ----------------------------------------------------------------------------------------- report


def _ratio(rows: list[dict], key: str) -> float:
    by = {r["data_path"]: r[key] for r in rows}
    return by["memory"] / by["stream"]


def _memory_table(title: str, rows: list[dict], images: int | None) -> None:
    base = next((r for r in rows if r["data_path"] == "baseline"), None)
    print(f"\n{title}:\n| data path | peak tree RSS MiB | peak tree PSS MiB | PSS above baseline MiB ", end="")
    print("| search process HWM MiB | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        hwm = f"{r['search_process_hwm_mib']:.0f}" if "search_process_hwm_mib" in r else "-"
        rss, pss = r["peak_tree_rss_mib"], r["peak_tree_pss_mib"]
        above = f"{pss - base['peak_tree_pss_mib']:.0f}" if base else "-"
        print(f"| {r['data_path']} | {rss:.0f} | {pss:.0f} | {above} | {hwm} | {r['wall_s']:.1f} |")
    rss, pss = _ratio(rows, "peak_tree_rss_mib"), _ratio(rows, "peak_tree_pss_mib")
    line = f"memory / stream: RSS {rss:.2f}x, PSS {pss:.2f}x"
    if base:
        by = {r["data_path"]: r["peak_tree_pss_mib"] - base["peak_tree_pss_mib"] for r in rows}
        line += f", PSS above baseline {by['memory'] / max(by['stream'], 1.0):.2f}x"
    print(line)
    if images:
        decoded = images * 3 * 224 * 224 / MIB
        print(f"(the in-memory path holds {images} x 3 x 224 x 224 uint8 = {decoded:.0f} MiB decoded)")


def report(result: dict) -> None:
    print(f"command: {result['command']}\nmachine: {result['machine']}")
    print(f"tree: {result['images']} JPEGs of 224x224 in {result['classes']} classes ({result['tree_mib']:.1f} MiB)")
    print(f"\nstreamed loader, batch {result['batch']}:\n| decode workers | images/s (median) |\n|---|---|")
    for row in result["throughput"]:
        print(f"| {row['workers']} | {row['images_per_s']:.0f} |")
    one, two = (r["images_per_s"] for r in result["throughput"])
    print(f"2 workers / 1 worker: {two / one:.2f}x")
    for entry in result["memory"]:
        title = f"build_data + one epoch of both streams, {entry['images']} images"
        _memory_table(title, entry["rows"], entry["images"])
    if result.get("launch"):
        _memory_table(f"ostr-ray launch --seeds 3, {result['images']} images", result["launch"], None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--memory-images", default="", help="tree sizes of the memory runs (default: --images)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3, help="timed epochs per worker count")
    parser.add_argument("--repeats", type=int, default=1, help="fresh-process memory runs per data path")
    parser.add_argument("--workers", type=int, default=1, help="decode workers per stream in the memory runs")
    parser.add_argument("--launch", action="store_true", help="also compare 3-seed ostr-ray launches")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("baseline", "stream", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tree, args.batch, args.workers)
        return
    sizes = [int(n) for n in args.memory_images.split(",") if n] or [args.images]
    with tempfile.TemporaryDirectory() as tmp:
        tree = write_tree(Path(tmp) / "tree", args.images, args.classes, 224)
        files = list(tree.rglob("*.jpg"))
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}",
            "images": len(files),
            "classes": args.classes,
            "batch": args.batch,
            "tree_mib": sum(p.stat().st_size for p in files) / MIB,
            "throughput": [throughput(tree, args.batch, w, args.passes) for w in (1, 2)],
            "memory": [],
        }
        for n in sizes:
            sized = tree if n == args.images else write_tree(Path(tmp) / f"tree{n}", n, args.classes, 224)
            result["memory"].append({"images": n, "rows": memory(sized, args.batch, args.workers, args.repeats)})
        if args.launch:
            result["launch"] = launch(tree, min(args.batch, 16), args.repeats)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
