"""The driver's Tune callback without a cluster: what the listeners see when a trial is retried."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.orchestration.callbacks import CoordinatorCallback
from ostr_ray.orchestration.trial import REPORTS_KEY
from tests.conftest import make_report

GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


class _Listener:
    def __init__(self) -> None:
        self.reports: list[tuple[int, int]] = []
        self.retried: list[tuple[TrialKey, str, int]] = []

    def on_trial_report(self, key, report):
        self.reports.append((key.seed, report.epoch))

    def on_epoch_stats(self, stats):
        pass

    def on_trial_retried(self, key, cause, resumes_after):
        self.retried.append((key, cause, resumes_after))


def _result(*epochs: int) -> dict:
    scores = {"normal": np.arange(30, dtype=float).reshape(6, 5)}
    reports = [make_report(e, 1, {"ostr": GENOTYPE, "magnitude": GENOTYPE}, scores) for e in epochs]
    return {REPORTS_KEY: json.dumps([r.to_json() for r in reports])}


def test_a_retried_trial_s_re_sent_epochs_reach_the_listeners_once(tmp_path):
    coordinator = Coordinator()
    coordinator.register(TrialKey("demo", 1))
    callback = CoordinatorCallback(coordinator, str(tmp_path))
    listener = _Listener()
    callback.listeners = [listener]
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1 (occurred at 2026-12-03)\nThe node 127.0.0.1 was lost (raylet died)\n")
    trial = SimpleNamespace(config={"trial": {"variant": "demo", "seeds": [1]}}, error_file=str(error), storage=None)
    callback.on_trial_result(1, [], trial, _result(1))
    callback.on_trial_result(2, [], trial, _result(2))
    callback.on_trial_recover(3, [], trial)
    callback.on_trial_result(4, [], trial, _result(1, 2, 3))  # the retry re-sends epochs 1 and 2, then 3
    assert listener.reports == [(1, 1), (1, 2), (1, 3)]
    assert listener.retried == [(TrialKey("demo", 1), "The node 127.0.0.1 was lost (raylet died)", 2)]
    assert coordinator.trial_reports(TrialKey("demo", 1))[-1].epoch == 3


def test_the_launch_view_says_a_retry_in_one_line():
    import io

    from rich.console import Console

    from ostr_ray.console.live import LaunchView

    out = io.StringIO()
    view = LaunchView("ostr", quiet=True, console=Console(file=out, width=100))
    view.on_trial_retried(TrialKey("demo", 1), "The node 127.0.0.1 was lost", 2)
    view.on_trial_retried(TrialKey("demo", 2), "worker killed", 0)
    assert out.getvalue().splitlines() == [
        "demo seed 1 lost its trial (The node 127.0.0.1 was lost): continues from epoch 2",
        "demo seed 2 lost its trial (worker killed): starts again",
    ]
