"""A space and a criterion registered in a test module (tests/plugins/toy.py), and nothing else touched, flow
through a search, the console, the coordinator's launch summary, the MLflow record and the evidence report."""

from __future__ import annotations

import pytest
from rich.console import Console

from ostr_ray.console.progress import epoch_line
from ostr_ray.console.summary import launch_summary_table
from ostr_ray.core.config import build_config
from ostr_ray.core.coordinator import Coordinator, TrialKey
from ostr_ray.core.search import Searcher
from ostr_ray.experiment import LaunchDir, LaunchReport, LaunchSpec, SearchDir, SearchRecord
from tests.plugins import toy

SEEDS = (0, 1)


@pytest.fixture
def registered():
    toy.register()
    yield
    toy.unregister()


def _config(seed: int):
    return build_config(
        None,
        dict(
            space=toy.SPACE,
            space_kwargs={"C": 4},
            dataset="synthetic",
            image_size=8,
            train_size=32,
            val_size=32,
            batch_size=16,
            epochs=2,
            a_lr=3e-2,
            criterion=toy.CRITERION,
            threads=1,
            seed=seed,
        ),
    )


def _text(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_a_registered_space_and_criterion_reach_every_edge(registered, tmp_path):
    from mlflow import MlflowClient

    from ostr_ray.evidence import build_evidence, render_markdown
    from ostr_ray.tracking.recorder import LaunchRecorder

    results = {seed: Searcher(_config(seed), out_dir=tmp_path / f"s{seed}").run() for seed in SEEDS}
    # search: every epoch carries the new criterion's genotype, in the new space's own form
    for result in results.values():
        assert all(r.genotypes[toy.CRITERION].startswith("chain:") for r in result.history)
    SearchDir(tmp_path / "s0").write_record(SearchRecord(_config(0).to_dict(), results[0]))
    assert SearchDir(tmp_path / "s0").read_record().result.final_genotypes == results[0].final_genotypes
    # console: the watched criterion's genotype with the space's short op names
    line = epoch_line(results[0].history[-1], toy.CRITERION)
    assert f"{toy.CRITERION}=chain:" in line and "conv3x3" not in line and "identity" not in line

    coordinator = Coordinator(criterion=toy.CRITERION)
    stats = []
    for seed in SEEDS:
        coordinator.register(TrialKey("toy", seed))
    for epoch in (1, 2):
        for seed in SEEDS:
            stats += coordinator.update(TrialKey("toy", seed), results[seed].history[epoch - 1])
    for seed in SEEDS:
        coordinator.mark_finished(TrialKey("toy", seed), "finished")
    summary = coordinator.summary()
    variant = summary.variants["toy"]
    assert variant.space == toy.SPACE and toy.parse(variant.consensus_genotype)
    table = _text(launch_summary_table(summary, stop_reason="every trial ended"))
    assert "OStr-2SE" in table and "chain:" in table

    spec = LaunchSpec(variants={"toy": _config(0).to_dict()}, seeds=list(SEEDS), name="toy", storage=str(tmp_path))
    recorder = LaunchRecorder(f"sqlite:///{tmp_path / 'mlflow.db'}", spec.experiment_path)
    recorder.start(spec, coordinator)
    for seed in SEEDS:
        for report in results[seed].history:
            recorder.on_trial_report(TrialKey("toy", seed), report)
    for epoch_stats in stats:
        recorder.on_epoch_stats(epoch_stats)
    report = LaunchReport(
        **vars(summary), name="toy", experiment_path=spec.experiment_path, stop_reason="every trial ended", launch=spec
    )
    recorder.finish(report)
    assert recorder.errors == []  # plots included: heatmaps with the space's edge labels, a text cell diagram
    client = MlflowClient(tracking_uri=recorder.tracking_uri)
    runs = client.search_runs([recorder.experiment_id])
    children = [r for r in runs if r.data.tags.get("ostr.role") == "trial"]
    assert {r.data.tags[f"genotype.{toy.CRITERION}"] for r in children} == {
        results[s].final_genotypes[toy.CRITERION] for s in SEEDS
    }
    parent = next(r for r in runs if r.data.tags.get("ostr.role") == "parent")
    assert parent.data.tags["consensus_genotype"] == variant.consensus_genotype

    launch = LaunchDir(spec.experiment_path)
    launch.write_spec(spec)
    launch.write_history(coordinator.state_dict())
    launch.write_report(report)
    evidence = render_markdown(build_evidence(spec.experiment_path))
    assert "OStr-2SE" in evidence and "toy" in evidence
