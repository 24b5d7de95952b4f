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
    trial = SimpleNamespace(
        config={"trial": {"variant": "demo", "seeds": [1]}}, error_file=str(error), storage=None, last_result={}
    )
    callback.on_trial_result(1, [], trial, _result(1))
    callback.on_trial_result(2, [], trial, _result(2))
    callback.on_trial_recover(3, [], trial)
    callback.on_trial_result(4, [], trial, _result(1, 2, 3))  # the retry re-sends epochs 1 and 2, then 3
    assert listener.reports == [(1, 1), (1, 2), (1, 3)]
    assert listener.retried == [(TrialKey("demo", 1), "a node lost", 2)]  # no IP in the error nor a result
    assert coordinator.trial_reports(TrialKey("demo", 1))[-1].epoch == 3


def test_the_launch_view_says_a_retry_in_one_line():
    import io

    from rich.console import Console

    from ostr_ray.console.live import LaunchView

    out = io.StringIO()
    view = LaunchView("ostr", quiet=True, console=Console(file=out, width=100))
    view.on_trial_retried(TrialKey("demo", 1), "node 127.0.0.1 lost", 2)
    view.on_trial_retried(TrialKey("demo", 2), "trial failed (worker killed)", 0)
    assert out.getvalue().splitlines() == [
        "node 127.0.0.1 lost: demo seed 1 continues from epoch 2",
        "trial failed (worker killed): demo seed 2 starts again",
    ]


ACTOR_UNAVAILABLE = """Failure # 1 (occurred at 2026-12-07_01-52-10)
ray::ImplicitFunc.train() (pid=4242, ip=127.0.0.1, actor_id=677c8b, repr=search_trial)
ray.exceptions.ActorUnavailableError: The actor 677c8b is unavailable: The actor is temporarily unavailable: RpcError:
RPC error: recvmsg:Connection reset by peer rpc_code: 14. The task may or may not have been executed on the actor.
"""
NODE_DIED = """Failure # 1 (occurred at 2026-12-07_01-50-00)
ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tpid: 4242
\tip: 10.0.0.7
The actor is dead because its node has died. Node Id: 0a54ea8d
"""
WORKER_RAISED = """Failure # 1 (occurred at 2026-12-07_01-40-00)
ValueError: boom
Failure # 2 (occurred at 2026-12-07_01-41-00)
ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
\tip: 10.0.0.7
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR
"""


def test_a_retry_names_the_lost_node_or_the_latest_error(tmp_path):
    from ostr_ray.orchestration.callbacks import retry_cause

    def trial(text: str, node_ip: str = "10.0.0.9") -> SimpleNamespace:
        path = tmp_path / f"error{len(text)}.txt"
        path.write_text(text)
        return SimpleNamespace(error_file=str(path), last_result={"node_ip": node_ip})

    assert retry_cause(trial(ACTOR_UNAVAILABLE)) == "node 10.0.0.9 lost"  # from where the trial last reported
    assert retry_cause(trial(NODE_DIED)) == "node 10.0.0.7 lost"  # from Ray's own error
    assert retry_cause(trial(WORKER_RAISED)).startswith("trial failed (ray.exceptions.ActorDiedError: The actor died")


def test_ray_s_messages_that_a_node_died_are_left_to_the_launch_s_one_line():
    from ostr_ray.orchestration.ray_messages import one_line

    dump = "Raylet is terminated. Termination is unexpected. Last 20 lines of the Raylet logs:\n"
    dump += "[state-dump] x\n" * 20
    assert one_line(dump) is None
    assert one_line("The node with node id: 0a54 and address: 10.0.0.7 has been marked dead because ...") is None
    assert one_line("Task was killed due to the node running low on memory.\nMemory on the node: ...") == (
        "Task was killed due to the node running low on memory."
    )


def test_a_remote_launch_s_journal_comes_back_on_a_new_head(tmp_path):
    """Records mirrored in segments at each checkpoint are replayed into a new head's empty local journal."""
    from ostr_ray.core.journal import DiskJournal
    from ostr_ray.experiment.storage import Storage
    from ostr_ray.orchestration.journal_mirror import MirroredJournal

    bucket = Storage(tmp_path / "bucket" / "driver-journal")  # a local folder stands in for the bucket here
    old_head = MirroredJournal(DiskJournal(tmp_path / "old"), bucket)
    reports = [make_report(e, 1, {"ostr": GENOTYPE}, {"normal": np.full((6, 5), float(e))}) for e in (1, 2, 3)]
    old_head.add_report("demo", 1, reports[0])
    old_head.flush()
    old_head.add_report("demo", 1, reports[1])
    old_head.add_report("demo", 1, reports[1])  # a re-sent epoch
    old_head.flush()
    old_head.flush()  # nothing new: no segment
    old_head.add_report("demo", 1, reports[2])  # never flushed: the head died first
    assert bucket.names() == ["segment-00000000.pkl", "segment-00000001.pkl"]

    new_head = MirroredJournal(DiskJournal(tmp_path / "new"), bucket)
    assert new_head.restore() == 3
    assert [r["epoch"] for r in new_head.report_dicts("demo", 1)] == [1, 2]
    new_head.add_report("demo", 1, reports[2])
    new_head.flush()
    assert bucket.names()[-1] == "segment-00000002.pkl"
    assert MirroredJournal(DiskJournal(tmp_path / "new"), bucket).restore() == 0  # its own journal is kept
    new_head.clear()
    assert bucket.names() == [] and new_head.report_dicts("demo", 1) == []
