"""The cross-seed coordinator on hand-made EpochReports: statistics, asynchrony, stopping, persistence."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from ostr_ray.core.consensus import kendall_tau_b, normalise_rows
from ostr_ray.core.coordinator import Coordinator, EpochStats, TrialKey
from ostr_ray.core.events import EpochReport
from searchspaces import get_space
from searchspaces.darts_genotype import DartsGenotype
from searchspaces.nb201_genotype import NB201Genotype
from tests.conftest import make_report

NB201 = get_space("nb201")
DARTS = get_space("darts")
OPS = NB201.ops  # none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
SKIP, CONV1, CONV3 = OPS.index("skip_connect"), OPS.index("nor_conv_1x1"), OPS.index("nor_conv_3x3")
V = "nb201-cifar10"
SCORE_NAMES = ("ostr", "ostr_star", "naive")


def cell(*ops: int) -> str:
    """NB201 string with op index ``ops[e]`` on edge row e; one index means that op on all six edges."""
    ops = ops * 6 if len(ops) == 1 else ops
    return NB201Genotype(tuple(OPS[o] for o in ops)).to_str()


def strength_for(text: str, rows: dict[int, list[float]] | None = None) -> np.ndarray:
    """0.5 on the genotype's op of each edge, 0.1 elsewhere; ``rows`` replace whole edge rows."""
    matrix = np.full((6, 5), 0.1)
    for edge, op in NB201.parse_genotype(text).edge_choices()["normal"].items():
        matrix[edge, op] = 0.5
    for edge, row in (rows or {}).items():
        matrix[edge] = row
    return matrix


def report(
    epoch: int,
    seed: int,
    text: str,
    *,
    scores: np.ndarray | None = None,
    rows: dict | None = None,
    stable_for: int = 0,
    stop_reason: str | None = None,
    extra: dict[str, str] | None = None,
    space: str = "nb201",
    matrices: dict[str, np.ndarray] | None = None,
) -> EpochReport:
    """An EpochReport whose ostr/ostr_star/naive scores all equal ``scores`` (or :func:`strength_for`)."""
    if matrices is None:
        matrices = {"normal": strength_for(text, rows) if scores is None else np.asarray(scores, float)}
    genotypes = {"ostr": text, **(extra or {})}
    return make_report(
        epoch,
        seed,
        genotypes if text else {},
        matrices,
        space=space,
        stop_reason=stop_reason,
        stable_for={c: stable_for for c in genotypes},
    )


def one_epoch(coord: Coordinator, reports: dict[int, EpochReport], variant: str = V) -> EpochStats:
    """Register the seeds, feed one epoch's reports; together they must complete exactly that epoch."""
    for seed in reports:
        coord.register(TrialKey(variant, seed))
    out = []
    for seed, rep in reports.items():
        out += coord.update(TrialKey(variant, seed), rep)
    assert [s.epoch for s in out] == [next(iter(reports.values())).epoch]
    return out[0]


# ------------------------------------------------------------------------------------------- statistics


def test_modal_genotype_and_agreement_with_two_of_three_seeds_agreeing():
    a, b = cell(CONV3), cell(CONV1)
    stats = one_epoch(Coordinator(), {0: report(1, 0, a), 1: report(1, 1, b), 2: report(1, 2, a)})
    assert stats.n_seeds == 3
    assert stats.modal_genotype == a
    assert stats.agreement == pytest.approx(2 / 3)
    assert stats.genotypes == {0: {"ostr": a}, 1: {"ostr": b}, 2: {"ostr": a}}


def test_modal_tie_goes_to_the_lexicographically_smallest_string():
    a, b = cell(CONV3), cell(CONV1)
    first = one_epoch(Coordinator(), {0: report(1, 0, a), 1: report(1, 1, b)})
    second = one_epoch(Coordinator(), {1: report(1, 1, b), 0: report(1, 0, a)})
    assert first.modal_genotype == second.modal_genotype == min(a, b)
    assert first.agreement == 0.5


def test_vote_shares_are_exact_fractions_of_seeds():
    genotypes = [
        cell(CONV3),
        cell(SKIP, CONV3, CONV3, CONV3, CONV3, CONV3),
        cell(CONV1, CONV3, CONV3, CONV3, CONV3, CONV1),
    ]
    stats = one_epoch(Coordinator(), {s: report(1, s, g) for s, g in enumerate(genotypes)})
    votes = stats.vote_share["normal"]
    np.testing.assert_allclose(votes[0], [0, 1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(votes[1:5], np.tile([0, 0, 0, 1, 0], (4, 1)))
    np.testing.assert_allclose(votes[5], [0, 0, 1 / 3, 2 / 3, 0])


def test_strength_mean_and_std_use_row_normalised_scores():
    a = cell(CONV3)
    s0 = np.tile([0.0, 1.0, 1.0, 2.0, 0.0], (6, 1))  # normalised: [0, .25, .25, .5, 0]
    s1 = np.tile([0.0, 0.0, 0.0, 4.0, 4.0], (6, 1))  # normalised: [0, 0, 0, .5, .5]
    stats = one_epoch(Coordinator(), {0: report(1, 0, a, scores=s0), 1: report(1, 1, a, scores=s1)})
    np.testing.assert_allclose(stats.strength_mean["normal"][0], [0, 0.125, 0.125, 0.5, 0.25])
    np.testing.assert_allclose(stats.strength_std["normal"][0], [0, 0.125, 0.125, 0.0, 0.25])
    np.testing.assert_allclose(normalise_rows(np.zeros((2, 4))), 0.25)


def test_magnitude_criterion_ranks_by_betas():
    a = cell(CONV3)
    rep = report(1, 0, a, extra={"magnitude": a})
    rep.betas["normal"] = np.tile([0.1, 0.1, 0.2, 0.4, 0.2], (6, 1))
    stats = one_epoch(Coordinator(criterion="magnitude"), {0: rep})
    np.testing.assert_allclose(stats.strength_mean["normal"], rep.betas["normal"])


def test_kendall_tau_identical_reversed_and_hand_computed():
    a = cell(CONV3)
    up = np.tile([1.0, 2.0, 3.0, 4.0, 5.0], (6, 1))
    swapped = np.tile([1.0, 3.0, 2.0, 4.0, 5.0], (6, 1))  # one discordant pair of 10: tau = (9 - 1) / 10

    def tau(*matrices: np.ndarray) -> float | None:
        reps = {s: report(1, s, a, scores=m) for s, m in enumerate(matrices)}
        return one_epoch(Coordinator(), reps).mean_kendall_tau

    assert tau(up, up) == pytest.approx(1.0)
    assert tau(up, up[:, ::-1]) == pytest.approx(-1.0)
    assert tau(up, swapped) == pytest.approx(0.8)
    assert tau(up, swapped, up[:, ::-1]) == pytest.approx((0.8 - 1.0 - 0.8) / 3)  # mean over the 3 pairs
    assert tau(up) is None


def test_kendall_tau_skips_constant_rows_and_matches_scipy_with_ties():
    a = cell(CONV3)
    flat = np.tile([1.0, 2.0, 3.0, 4.0, 5.0], (6, 1))
    flat[0] = 0.0  # constant row: no tau on edge 0, the other five edges still count
    stats = one_epoch(Coordinator(), {0: report(1, 0, a, scores=flat), 1: report(1, 1, a, scores=flat + 1)})
    assert stats.mean_kendall_tau == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 3, (200, 8)).astype(float), rng.integers(0, 3, (200, 8)).astype(float)
    ours = kendall_tau_b(x, y)
    reference = np.array([kendalltau(xr, yr).statistic for xr, yr in zip(x, y, strict=True)])
    np.testing.assert_allclose(ours, reference, equal_nan=True)


def test_consensus_tie_is_broken_by_summed_normalised_strength():
    a = cell(CONV3)
    b = cell(CONV1, CONV3, CONV3, CONV3, CONV3, CONV3)
    strong_a = {0: [0.1, 0.1, 0.1, 0.6, 0.1]}  # conv3 0.6 of its row
    weak_b = {0: [0.1, 0.1, 0.3, 0.2, 0.1]}  # conv1 0.375, conv3 0.25
    stats = one_epoch(Coordinator(), {0: report(1, 0, a, rows=strong_a), 1: report(1, 1, b, rows=weak_b)})
    assert stats.consensus_genotype == a
    weak_a = {0: [0.1, 0.1, 0.2, 0.3, 0.1]}
    strong_b = {0: [0.1, 0.1, 0.9, 0.1, 0.1]}
    stats = one_epoch(Coordinator(), {0: report(1, 0, a, rows=weak_a), 1: report(1, 1, b, rows=strong_b)})
    assert stats.consensus_genotype == b


def test_consensus_vote_wins_over_larger_strength():
    a = cell(CONV3)
    b = cell(CONV1, CONV3, CONV3, CONV3, CONV3, CONV3)
    barely_b = {0: [0.1, 0.1, 0.26, 0.25, 0.1]}
    huge_a = {0: [0.0, 0.0, 0.0, 1.0, 0.0]}
    reps = {
        0: report(1, 0, b, rows=barely_b),
        1: report(1, 1, b, rows=barely_b),
        2: report(1, 2, a, rows=huge_a),
    }
    stats = one_epoch(Coordinator(), reps)
    mean = stats.strength_mean["normal"][0]
    assert mean[CONV3] > mean[CONV1]  # strength favours conv3 on edge 0 ...
    assert stats.consensus_genotype == b  # ... but two votes beat one
    assert stats.vote_share["normal"][0, CONV1] == pytest.approx(2 / 3)


def test_per_criterion_consensus_covers_every_criterion_the_reports_carry():
    a, b = cell(CONV3), cell(SKIP)
    reps = {s: report(1, s, a, extra={"magnitude": b, "ostr_star": a}) for s in range(2)}
    stats = one_epoch(Coordinator(), reps)
    assert stats.criterion_consensus == {"ostr": a, "magnitude": b, "ostr_star": a}
    assert stats.criterion_agreement == {"ostr": 1.0, "magnitude": 1.0, "ostr_star": 1.0}


def test_warmup_reports_without_genotypes_give_no_consensus():
    coord = Coordinator(patience=1)
    stats = one_epoch(coord, {s: report(1, s, "", scores=np.zeros((6, 5))) for s in range(2)})
    assert (stats.modal_genotype, stats.agreement, stats.consensus_genotype) == (None, 0.0, None)
    assert stats.mean_kendall_tau is None
    assert coord.experiment_should_stop() is None


# ------------------------------------------------------------------------------------------- asynchrony


def test_epochs_complete_only_when_every_running_seed_reported():
    coord = Coordinator()
    keys = [TrialKey(V, s) for s in range(3)]
    for key in keys:
        coord.register(key)
    a = cell(CONV3)
    assert coord.update(keys[0], report(1, 0, a)) == []
    assert coord.update(keys[1], report(1, 1, a)) == []
    assert [s.epoch for s in coord.update(keys[2], report(1, 2, a))] == [1]
    for epoch in (2, 3):
        assert coord.update(keys[0], report(epoch, 0, a)) == []
    assert coord.update(keys[1], report(2, 1, a)) == []
    assert coord.mark_finished(keys[1], "finished") == []  # seed 2 still owes epoch 2
    done = coord.update(keys[2], report(2, 2, cell(CONV1)))
    assert [s.epoch for s in done] == [2]
    assert done[0].n_seeds == 3
    released = coord.mark_finished(keys[2], "failed", "OOM")
    assert [s.epoch for s in released] == [3]
    third = released[0]
    assert sorted(third.genotypes) == [0, 1]  # failed seed 2 excluded
    assert third.report_epochs == {0: 3, 1: 2}  # finished seed 1 carries its epoch-2 report forward


def test_a_failed_laggard_releases_several_epochs_at_once():
    coord = Coordinator()
    for s in range(2):
        coord.register(TrialKey(V, s))
    for epoch in (1, 2, 3):
        coord.update(TrialKey(V, 0), report(epoch, 0, cell(CONV3)))
    assert coord.history(V) == []
    assert [s.epoch for s in coord.mark_finished(TrialKey(V, 1), "failed")] == [1, 2, 3]
    assert coord.trial_status(TrialKey(V, 1)) == ("failed", "")


def test_a_registered_seed_that_never_reports_holds_back_its_variant_only():
    coord = Coordinator()
    coord.register(TrialKey(V, 0))
    coord.register(TrialKey(V, 1))
    assert coord.update(TrialKey(V, 0), report(1, 0, cell(CONV3))) == []
    other = coord.update(TrialKey("nb201-cifar100", 0), report(1, 0, cell(CONV1)))
    assert [(s.variant, s.epoch) for s in other] == [("nb201-cifar100", 1)]


def test_a_re_reported_epoch_is_never_counted_twice():
    coord = Coordinator()
    a, b = cell(CONV3), cell(CONV1)
    coord.register(TrialKey(V, 1))
    assert coord.update(TrialKey(V, 0), report(1, 0, b)) == []
    assert coord.update(TrialKey(V, 0), report(1, 0, a)) == []  # replaces, before completion
    first = coord.update(TrialKey(V, 1), report(1, 1, a))[0]
    assert first.n_seeds == 2 and first.agreement == 1.0
    assert coord.update(TrialKey(V, 0), report(1, 0, b)) == []  # retried trial re-reports a done epoch
    coord.mark_finished(TrialKey(V, 0), "failed")
    assert coord.update(TrialKey(V, 0), report(1, 0, a)) == []  # a retry revives a failed trial
    assert coord.trial_status(TrialKey(V, 0))[0] == "running"
    second = one_epoch(coord, {0: report(2, 0, a), 1: report(2, 1, a)})
    assert [s.epoch for s in coord.history(V)] == [1, 2]
    assert second.n_seeds == 2 and second.consensus_stable_for == 1


# ------------------------------------------------------------------------------------------- stopping


def test_experiment_stop_fires_exactly_after_patience_epochs():
    coord = Coordinator(patience=2, agreement=0.8)
    a = cell(CONV3)
    seen = []
    for epoch in (1, 2, 3):
        stats = one_epoch(coord, {s: report(epoch, s, a) for s in range(2)})
        seen.append((stats.consensus_stable_for, coord.experiment_should_stop()))
    assert seen[:2] == [(0, None), (1, None)]
    assert seen[2][0] == 2
    assert seen[2][1] == f"{V}: consensus held 2 epochs at agreement 1.00 (>= 0.80)"


def test_a_consensus_change_resets_the_counter():
    coord = Coordinator(patience=1)
    one_epoch(coord, {0: report(1, 0, cell(CONV3))})
    assert coord.latest(V).consensus_stable_for == 0
    one_epoch(coord, {0: report(2, 0, cell(CONV3))})
    assert coord.experiment_should_stop() is not None
    one_epoch(coord, {0: report(3, 0, cell(CONV1))})
    assert coord.latest(V).consensus_stable_for == 0
    assert coord.experiment_should_stop() is None


def test_no_experiment_stop_below_the_agreement_threshold():
    a, b = cell(CONV3), cell(CONV1)
    strict, loose = Coordinator(patience=1, agreement=0.8), Coordinator(patience=1, agreement=0.6)
    for coord in (strict, loose):
        for epoch in (1, 2, 3):
            one_epoch(coord, {0: report(epoch, 0, a), 1: report(epoch, 1, a), 2: report(epoch, 2, b)})
    assert strict.latest(V).consensus_stable_for == 2
    assert strict.experiment_should_stop() is None
    assert loose.experiment_should_stop() == f"{V}: consensus held 2 epochs at agreement 0.67 (>= 0.60)"


def test_experiment_stop_needs_every_variant():
    coord = Coordinator(patience=1)
    for epoch in (1, 2):
        one_epoch(coord, {0: report(epoch, 0, cell(CONV3))})
    assert coord.experiment_should_stop() is not None
    one_epoch(coord, {0: report(1, 0, cell(CONV3))}, variant="other")
    assert coord.experiment_should_stop() is None


@pytest.mark.parametrize("kwargs", [{"patience": 0}, {"patience": 1, "experiment_stop": False}])
def test_experiment_stop_switched_off(kwargs):
    coord = Coordinator(**kwargs)
    for epoch in (1, 2, 3):
        one_epoch(coord, {0: report(epoch, 0, cell(CONV3))})
    assert coord.latest(V).consensus_stable_for == 2
    assert coord.experiment_should_stop() is None


def test_seed_should_stop_surfaces_the_trials_own_stop_reason():
    coord = Coordinator()
    coord.update(TrialKey(V, 0), report(1, 0, cell(CONV3)))
    assert not coord.seed_should_stop(TrialKey(V, 0))
    assert not coord.seed_should_stop(TrialKey(V, 9))
    coord.update(TrialKey(V, 0), report(2, 0, cell(CONV3), stop_reason="ostr genotype stable for 1 epochs"))
    assert coord.seed_should_stop(TrialKey(V, 0))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="bogus"):
        Coordinator(criterion="bogus")
    with pytest.raises(ValueError, match="status"):
        Coordinator().mark_finished(TrialKey(V, 0), "running")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- persistence


def _events() -> list[tuple]:
    """An interleaved stream over two variants: a laggard, a duplicate, a finish and a failure."""
    a, b = cell(CONV3), cell(CONV1)
    w = "nb201-cifar100"
    events: list[tuple] = [("register", TrialKey(V, s)) for s in range(3)]
    for epoch in range(1, 6):
        events += [
            ("update", TrialKey(V, 0), report(epoch, 0, a, stable_for=epoch - 1, extra={"magnitude": b})),
            ("update", TrialKey(w, 0), report(epoch, 0, b, stable_for=epoch - 1)),
            ("update", TrialKey(V, 1), report(epoch, 1, a if epoch > 2 else b, extra={"magnitude": b})),
        ]
        if epoch <= 3:
            events.append(("update", TrialKey(V, 2), report(epoch, 2, b, extra={"magnitude": a})))
        if epoch == 2:
            events.append(("update", TrialKey(V, 0), report(2, 0, a, extra={"magnitude": a})))  # retry
        if epoch == 4:
            events.append(("finish", TrialKey(V, 2), "stopped", "stable"))
    events.append(("finish", TrialKey(V, 1), "failed", "node lost"))
    events.append(("finish", TrialKey(V, 0), "finished", ""))
    return events


def _apply(coord: Coordinator, event: tuple) -> list[EpochStats]:
    kind, key, *rest = event
    if kind == "register":
        coord.register(key)
        return []
    if kind == "update":
        return coord.update(key, *rest)
    return coord.mark_finished(key, *rest)


def test_state_round_trip_mid_stream_continues_identically():
    events = _events()
    straight = Coordinator(patience=2, agreement=0.5)
    emitted_straight = [s.to_json() for e in events for s in _apply(straight, e)]
    half = len(events) // 2
    first = Coordinator(patience=2, agreement=0.5)
    emitted = [s.to_json() for e in events[:half] for s in _apply(first, e)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = Coordinator(patience=2, agreement=0.5)
    resumed.load_state_dict(state)
    emitted += [s.to_json() for e in events[half:] for s in _apply(resumed, e)]
    assert emitted == emitted_straight
    assert resumed.summary() == straight.summary()
    assert [s.epoch for s in straight.history(V)] == [1, 2, 3, 4, 5]


def test_state_of_another_criterion_is_refused():
    with pytest.raises(ValueError, match="magnitude"):
        Coordinator().load_state_dict(Coordinator(criterion="magnitude").state_dict())


def test_summary_and_stats_are_json_round_trippable():
    coord = Coordinator(patience=2)
    for event in _events():
        _apply(coord, event)
    summary = json.loads(json.dumps(coord.summary().summary_json()))
    variant = summary["variants"][V]
    assert variant["seeds"]["1"]["status"] == "failed"
    assert variant["seeds"]["2"] == {
        "status": "stopped",
        "reason": "stable",
        "last_epoch": 3,
        "genotypes": {"ostr": cell(CONV1), "magnitude": cell(CONV3)},
        "stop_reason": None,
    }
    assert [row[0] for row in variant["history"]] == [1, 2, 3, 4, 5]
    assert set(variant["criterion_consensus"]) == {"ostr", "magnitude"}
    last = coord.latest(V)
    again = EpochStats.from_json(json.loads(json.dumps(last.to_json())))
    assert again.to_json() == last.to_json()
    assert isinstance(again.vote_share["normal"], np.ndarray)


# ------------------------------------------------------------------------------------------- DARTS


def _darts_report(epoch: int, seed: int, scores: dict[str, torch.Tensor]) -> EpochReport:
    text = DARTS.decode(scores).to_str()
    return report(epoch, seed, text, space="darts", matrices={c: m.numpy() for c, m in scores.items()})


def test_darts_consensus_decodes_to_a_valid_genotype():
    gen = torch.Generator().manual_seed(0)
    shape = DARTS.alpha_shape
    tables = [{c: torch.rand(shape, generator=gen, dtype=torch.float64) for c in DARTS.cell_types} for _ in range(4)]
    tables += [tables[0]] * 3  # 4 of 7 seeds agree, the other three are random
    reps = {s: _darts_report(1, s, t) for s, t in enumerate(tables)}
    stats = one_epoch(Coordinator(), reps, variant="darts-c10")
    assert set(stats.vote_share) == {"normal", "reduce"}
    assert stats.vote_share["normal"].shape == (14, 8)
    np.testing.assert_allclose(stats.vote_share["normal"].sum(), 8.0)  # every seed keeps 8 edges per cell
    consensus = DARTS.parse_genotype(stats.consensus_genotype)
    assert isinstance(consensus, DartsGenotype)
    assert all(len(edges) == 8 for edges in consensus.edge_choices().values())
    assert stats.modal_genotype == DARTS.decode(tables[0]).to_str()
    assert stats.agreement == pytest.approx(4 / 7)
    assert stats.consensus_genotype == stats.modal_genotype  # 4 votes on each of its edges beat <= 3
    assert -1.0 <= stats.mean_kendall_tau <= 1.0


# ------------------------------------------------------------------------------------------- scale


def test_compact_state_with_a_disk_journal_resumes_identically_and_keeps_o_seeds(tmp_path):
    from ostr_ray.core.journal import DiskJournal

    events = _events()
    straight = Coordinator(patience=2, agreement=0.5)
    emitted_straight = [s.to_json() for e in events for s in _apply(straight, e)]
    half = len(events) // 2
    first = Coordinator(patience=2, agreement=0.5)
    first.use_journal(DiskJournal(tmp_path / "journal"))
    emitted = [s.to_json() for e in events[:half] for s in _apply(first, e)]
    compact = pickle.loads(pickle.dumps(first.compact_state()))  # as Tune checkpoints it
    assert all(len(t["reports"]) <= 2 for t in compact["trials"])  # the next epoch's + pending, not every epoch
    resumed = Coordinator(patience=2, agreement=0.5)
    resumed.use_journal(DiskJournal(tmp_path / "journal"), keep=True)
    resumed.load_state_dict(compact)
    emitted += [s.to_json() for e in events[half:] for s in _apply(resumed, e)]
    assert emitted == emitted_straight
    assert resumed.summary() == straight.summary()
    assert [s.to_json() for s in resumed.history(V)] == [s.to_json() for s in straight.history(V)]
    for key in straight.trial_keys():
        assert [r.to_json() for r in resumed.trial_reports(key)] == [r.to_json() for r in straight.trial_reports(key)]
    full = resumed.state_dict()  # history.json: the journal's whole content, read back by from_state
    assert Coordinator.from_state(json.loads(json.dumps(full))).summary().variants == straight.summary().variants


def test_mean_kendall_tau_equals_the_pairwise_mean_with_ties():
    from itertools import combinations

    from ostr_ray.core.consensus import mean_kendall_tau

    rng = np.random.default_rng(3)
    strengths = [{"normal": rng.integers(0, 3, size=(6, 5)).astype(float)} for _ in range(7)]
    strengths[0]["normal"][2] = 1.0  # a constant row has no tau
    taus = np.concatenate([kendall_tau_b(a["normal"], b["normal"]) for a, b in combinations(strengths, 2)])
    assert mean_kendall_tau(strengths) == pytest.approx(float(np.nanmean(taus)))


def _random_darts_report(rng: np.random.Generator, epoch: int, seed: int) -> EpochReport:
    """A DARTS report whose every criterion has its own scores and genotype (magnitude from the betas)."""
    from ostr_ray.core.criteria import ArchState, select

    shape = DARTS.alpha_shape
    matrices = {c: rng.random(shape) for c in DARTS.cell_types}
    rep = report(epoch, seed, "", space="darts", matrices=matrices)
    rep.scores = {
        name: {c: rng.random(shape) * rng.choice([1.0, 1e-3]) for c in DARTS.cell_types} for name in rep.scores
    }
    rep.betas = {c: rng.dirichlet(np.ones(shape[1]), size=shape[0]) for c in DARTS.cell_types}
    state = ArchState.from_report(rep)
    rep.genotypes = {
        name: select(name, DARTS, state)[0].to_str() for name in ("ostr", "ostr_star", "naive", "magnitude")
    }
    rep.stable_for = {name: int(rng.integers(0, 3)) for name in rep.genotypes}
    return rep


def test_statistics_from_terms_kept_on_arrival_equal_those_computed_from_scratch():
    """The coordinator scores each report when it arrives (SeedTerms) and only sums at an epoch's completion;
    the stats must be exactly those of the plain reports, and their parts those of the textbook formulas."""
    from itertools import combinations

    from ostr_ray.core.consensus import compute_epoch_stats, normalised_strength

    rng = np.random.default_rng(7)
    seeds, epochs = list(range(9)), 4
    coord = Coordinator()
    for seed in seeds:
        coord.register(TrialKey("darts-c10", seed))
    sent: dict[tuple[int, int], EpochReport] = {}
    emitted: list[tuple[EpochStats, dict[int, EpochReport]]] = []

    def note(new: list[EpochStats]) -> None:
        emitted.extend((s, {seed: sent[seed, e] for seed, e in s.report_epochs.items()}) for s in new)

    queues = {s: list(range(1, (2 if s == 8 else epochs) + 1)) for s in seeds}  # seed 8 finishes at epoch 2
    queues[3].insert(2, 2)  # re-sent epochs (a retried trial's): epoch 2 of seed 3, epoch 4 of seed 5
    queues[5].append(4)
    turns = rng.permutation([s for s, queue in queues.items() for _ in queue])  # any order across seeds
    for seed in map(int, turns):
        epoch = queues[seed].pop(0)
        sent[seed, epoch] = _random_darts_report(rng, epoch, seed)
        note(coord.update(TrialKey("darts-c10", seed), sent[seed, epoch]))
        if seed == 8 and epoch == 2:
            note(coord.mark_finished(TrialKey("darts-c10", 8), "finished"))
    assert [s.epoch for s, _ in emitted] == list(range(1, epochs + 1))

    previous = None
    for stats, reports in emitted:
        plain = {s: EpochReport.from_json(r.to_json()) for s, r in reports.items()}  # nothing memoised
        assert stats.to_json() == compute_epoch_stats("darts-c10", stats.epoch, "ostr", plain, previous).to_json()
        previous = stats
        strengths = [normalised_strength(plain[s], "ostr", DARTS.cell_types) for s in sorted(plain)]
        for cell in DARTS.cell_types:
            np.testing.assert_array_equal(stats.strength_mean[cell], np.mean([m[cell] for m in strengths], axis=0))
            votes = np.zeros((14, 8))
            for rep in plain.values():
                for edge, op in DARTS.parse_genotype(rep.genotypes["ostr"]).edge_choices()[cell].items():
                    votes[edge, op] += 1
            np.testing.assert_array_equal(stats.vote_share[cell], votes / len(plain))
        pairs = [
            kendall_tau_b(a[c], b[c]) for a, b in combinations(strengths, 2) for c in DARTS.cell_types
        ]  # fmt: skip
        assert stats.mean_kendall_tau == pytest.approx(float(np.nanmean(np.concatenate(pairs))))
