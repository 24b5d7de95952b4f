"""What a launch's driver costs per epoch report at 1,000 trials: a replay of synthetic search-space reports
through the real driver path, without Ray's trials.

Every report goes, as Tune hands it over (the JSON of a trial's result), through
:class:`~ostr_ray.orchestration.callbacks.CoordinatorCallback` (coordinator update, epoch statistics on
completion, ``coordinator.json``), the plain log lines of the live view (off a terminal, into a file) and the
MLflow :class:`~ostr_ray.tracking.recorder.LaunchRecorder` against a local ``mlflow server`` (started here on
127.0.0.1, a free port, a SQLite store in a temporary folder, stopped at the end). Printed: the driver's
median / p99 / worst milliseconds per report, the state Tune pickles into its experiment checkpoint
(``pickle.dumps(callback.get_state())``), MLflow calls per report, how long the recorder's backlog took to
drain, and the machine. The garbage collector's pauses are timed apart (``gc.callbacks``): a full collection
walks every object the driver process tracks, ~400,000 of them from importing torch, Ray and MLflow before a
single report arrives, and costs 0.2-0.4 s on a 2-core machine whichever report it lands on; the driver
freezes them (``gc.freeze()`` before ``tuner.fit()``, orchestration/run.py) and so does the replay;
``--no-freeze-gc`` shows the cost without.

    python benchmarks/bench_driver.py                      # 1000 trials x 50 epochs, DARTS space
    python benchmarks/bench_driver.py --trials 200 --epochs 10 --json driver.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ostr_ray.console.live import LaunchView  # noqa: E402
from ostr_ray.core.coordinator import Coordinator, TrialKey  # noqa: E402
from ostr_ray.core.events import EpochReport  # noqa: E402
from ostr_ray.experiment import LaunchSpec  # noqa: E402
from ostr_ray.orchestration.callbacks import CoordinatorCallback  # noqa: E402
from ostr_ray.orchestration.trial import REPORTS_KEY  # noqa: E402
from ostr_ray.tracking.recorder import LaunchRecorder  # noqa: E402
from searchspaces import get_space  # noqa: E402

VARIANT = "bench"
CRITERIA = ("ostr", "ostr_star", "naive", "magnitude")
SCORE_NAMES = ("ostr", "ostr_star", "naive")


# ------------------------------------------------------------------------------------------------ MLflow server
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A local ``mlflow server`` (SQLite store, artifacts in ``folder``); waits for its /health."""
    port = _free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art"),
        "--workers", "1",
    ]  # fmt: skip
    # MLflow 3 otherwise starts job-runner (huey) processes, which poll: CPU the replay should not compete with
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return server, uri
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError("mlflow server did not answer /health within 120 s")


def stop_server(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.pid, 9)


# ------------------------------------------------------------------------------------------------ reports
class Reports:
    """Synthetic epoch reports of ``trials`` seeds: per seed a drifting preference, two candidate genotypes."""

    def __init__(self, space_name: str, trials: int, epochs: int) -> None:
        self.space = get_space(space_name)
        self.epochs = epochs
        rng = np.random.default_rng(0)
        self.base = [{c: rng.normal(size=self.space.alpha_shape) for c in self.space.cell_types} for _ in range(trials)]
        self.genotypes = [self._candidates(base, rng) for base in self.base]

    def _candidates(self, base: dict[str, np.ndarray], rng: np.random.Generator) -> list[str]:
        import torch

        tables = [base, {c: m + rng.normal(scale=0.5, size=m.shape) for c, m in base.items()}]
        return [self.space.decode({c: torch.as_tensor(m) for c, m in t.items()}).to_str() for t in tables]

    def report(self, seed: int, epoch: int) -> EpochReport:
        rng = np.random.default_rng(seed * 100_003 + epoch)

        def noisy(scale: float) -> dict[str, np.ndarray]:
            return {c: m + rng.normal(scale=scale, size=m.shape) for c, m in self.base[seed].items()}

        alphas = noisy(1.0 / epoch)
        betas = {c: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True) for c, a in alphas.items()}
        scores = {s: {c: np.abs(m) for c, m in noisy(1.0).items()} for s in SCORE_NAMES}
        pick = self.genotypes[seed][int(rng.random() < 1.0 / epoch)]
        return EpochReport(
            epoch=epoch, epochs=self.epochs, seed=seed, space=self.space.name,
            train_loss=2.0 / epoch, train_acc=1 - 1 / (epoch + 1), val_loss=2.2 / epoch, val_acc=1 - 1.2 / (epoch + 1),
            w_lr=0.025, a_lr=3e-4, arch_active=True, alphas=alphas, betas=betas, scores=scores,
            stderr={s: {c: np.full_like(m, 0.01) for c, m in cells.items()} for s, cells in scores.items()},
            genotypes=dict.fromkeys(CRITERIA, pick), changed=dict.fromkeys(CRITERIA, False),
            stable_for=dict.fromkeys(CRITERIA, epoch - 1), decisiveness={}, epoch_seconds=60.0, images_per_s=400.0,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------ replay
class GcPauses:
    """The garbage collector's pauses (``gc.callbacks``): (generation, seconds) each, in any thread."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))

    def seconds(self) -> float:
        return sum(s for _, s in self.pauses)

    def full(self) -> list[float]:
        return [s for g, s in self.pauses if g == 2]


def replay(args: argparse.Namespace, folder: Path, uri: str) -> dict[str, Any]:
    spec = LaunchSpec(
        variants={VARIANT: {"space": args.space, "criterion": "ostr", "epochs": args.epochs}},
        seeds=list(range(args.trials)),
        name="bench-driver",
        storage=str(folder),
        tracking_uri=uri,
    )
    Path(spec.experiment_path).mkdir(parents=True)
    coordinator = Coordinator(criterion="ostr", experiment_stop=False)
    for seed in spec.seeds:
        coordinator.register(TrialKey(VARIANT, seed))
    callback = CoordinatorCallback(coordinator, spec.experiment_path)
    log = open(folder / "driver.log", "w")  # noqa: SIM115 - open for the whole replay
    view = LaunchView("ostr", quiet=True, console=Console(file=log, width=100))
    recorder = LaunchRecorder.from_spec(spec, plot_every=args.plot_every)
    recorder.start(spec, coordinator)
    callback.view, callback.listeners = view, [view, recorder]
    calls_at_start = recorder.client.calls

    reports = Reports(args.space, args.trials, args.epochs)
    trials = [SimpleNamespace(config={"trial": {"variant": VARIANT, "seeds": [s]}}, storage=None) for s in spec.seeds]
    order = np.random.default_rng(1)
    times, gc_times, cpu_times, faults, epoch_ends = [], [], [], [], []
    thread_usage = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # per thread on Linux
    if args.freeze_gc:
        gc.freeze()  # as the driver does before tuner.fit(): full collections skip the imports' objects
    collector = GcPauses()
    gc.callbacks.append(collector)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        for seed in order.permutation(args.trials):  # trials report in any order
            result = {REPORTS_KEY: json.dumps([reports.report(int(seed), epoch).to_json()])}
            t0, cpu0, gc0 = time.perf_counter(), time.thread_time(), collector.seconds()
            majflt0 = resource.getrusage(thread_usage).ru_majflt
            callback.on_trial_result(0, [], trials[seed], result)
            callback.on_step_end(0, [])
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.thread_time() - cpu0)  # the rest of the wall time: waiting (GIL, disk)
            faults.append(resource.getrusage(thread_usage).ru_majflt - majflt0)  # pages read back from disk
            gc_times.append(collector.seconds() - gc0)
        epoch_ends.append(times[-1])
    replay_s = time.perf_counter() - started
    gc.callbacks.remove(collector)
    t0 = time.perf_counter()
    recorder.drain()
    drain_s = time.perf_counter() - t0
    calls = recorder.client.calls - calls_at_start
    t0 = time.perf_counter()
    state_bytes = len(pickle.dumps(callback.get_state()))  # what Tune does at each experiment checkpoint
    state_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    recorder.abort("benchmark over")  # every run KILLED, the recorder's thread stopped
    view.close()
    log.close()
    ms = np.asarray(times) * 1000.0
    gc_ms = np.asarray(gc_times) * 1000.0
    latest = coordinator.latest(VARIANT)
    return {
        "trials": args.trials,
        "epochs": args.epochs,
        "space": args.space,
        "plot_every": args.plot_every,
        "reports": len(times),
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "worst_ms": float(ms.max()),
        "worst_gc_ms": float(gc_ms[ms.argmax()]),
        "worst_epoch": int(ms.argmax()) // args.trials + 1,
        "worst_driver_cpu_ms": float(cpu_times[int(ms.argmax())] * 1000.0),
        "worst_major_faults": int(faults[int(ms.argmax())]),
        "major_faults": int(sum(faults)),
        "worst_without_gc_ms": float((ms - gc_ms).max()),
        "epoch_completion_median_ms": float(np.median(epoch_ends) * 1000.0),
        "epoch_completion_worst_ms": float(np.max(epoch_ends) * 1000.0),
        "freeze_gc": args.freeze_gc,
        "full_gc_count": len(collector.full()),
        "full_gc_worst_ms": max(collector.full(), default=0.0) * 1000.0,
        "gc_tracked_objects": len(gc.get_objects()),
        "replay_s": replay_s,
        "mlflow_drain_s": drain_s,
        "mlflow_close_s": time.perf_counter() - t0,
        "mlflow_calls": calls,
        "mlflow_calls_per_report": calls / len(times),
        "recorder_errors": len(recorder.errors),
        "state_bytes": state_bytes,
        "state_mb": state_bytes / 2**20,
        "state_pickle_ms": state_s * 1000.0,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "journal_mb": sum(f.stat().st_size for f in callback.journal_path().glob("*")) / 2**20,
        "epochs_summarised": latest.epoch if latest else 0,
        "mean_kendall_tau": latest.mean_kendall_tau if latest else None,
        "kendall_tau": "exact, every seed pair (O(seeds) identity, no sampling)",
        "machine": machine(),
    }


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--space", default="darts", help="search space of the synthetic reports (darts, nb201, ...)")
    parser.add_argument(
        "--plot-every", type=int, default=0, help="the recorder's heatmaps every N epochs per trial (0: none)"
    )
    parser.add_argument(
        "--no-freeze-gc", dest="freeze_gc", action="store_false", help="leave the imports' objects to the collector"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    server = None
    try:
        server, uri = start_server(folder)
        result = replay(args, folder, uri)
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"driver: {result['trials']} trials x {result['epochs']} epochs ({result['space']}), "
        f"{result['reports']} reports: median {result['median_ms']:.2f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"worst {result['worst_ms']:.1f} ms per report (epoch {result['worst_epoch']}; the driver thread's own CPU "
        f"{result['worst_driver_cpu_ms']:.0f} ms, garbage collection {result['worst_gc_ms']:.0f} ms, "
        f"{result['worst_major_faults']} major page faults) "
        f"(epoch completions: median {result['epoch_completion_median_ms']:.1f} ms, worst "
        f"{result['epoch_completion_worst_ms']:.1f} ms)"
    )
    print(
        f"garbage collector{' (frozen imports)' if result['freeze_gc'] else ''}: "
        f"{result['full_gc_count']} full collections, worst {result['full_gc_worst_ms']:.0f} ms, "
        f"{result['gc_tracked_objects']} tracked objects; worst report without its GC pauses "
        f"{result['worst_without_gc_ms']:.1f} ms"
    )
    print(
        f"state Tune pickles: {result['state_mb']:.2f} MB in {result['state_pickle_ms']:.0f} ms; "
        f"journal on disk {result['journal_mb']:.1f} MB; "
        f"max RSS {result['max_rss_mb']:.0f} MB; Kendall tau: {result['kendall_tau']}"
    )
    print(
        f"MLflow: {result['mlflow_calls']} calls, {result['mlflow_calls_per_report']:.3f} per report; backlog "
        f"drained {result['mlflow_drain_s']:.1f} s after the last report; {result['recorder_errors']} errors"
    )
    print(f"machine: {result['machine']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
