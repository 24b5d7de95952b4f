"""The criteria registry and Algorithm 1 (with and without the tie rule) on hand-made scores."""

from __future__ import annotations

import pytest
import torch

from ostr_ray.core.criteria import (
    ArchState,
    CriterionError,
    Selection,
    get_criterion,
    list_criteria,
    register_criterion,
    select,
)
from ostr_ray.core.early_stop import StabilityTracker, edge_decisiveness, is_tied_change
from searchspaces import get_space

NB201 = get_space("nb201")
OPS = NB201.ops  # none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3


def _state(alpha_best: int, strength_best: int, *, se: float = 0.0) -> ArchState:
    alphas = torch.zeros(6, 5, dtype=torch.float64)
    alphas[:, alpha_best] = 1.0
    strength = torch.full((6, 5), 0.1, dtype=torch.float64)
    strength[:, strength_best] = 0.5
    mean = {name: {"normal": strength.clone()} for name in ("ostr", "ostr_star", "naive")}
    stderr = {name: {"normal": torch.full((6, 5), se, dtype=torch.float64)} for name in mean}
    return ArchState(alphas={"normal": alphas}, betas={"normal": torch.softmax(alphas, -1)}, mean=mean, stderr=stderr)


def test_registry_holds_the_papers_criteria():
    assert list_criteria()[:4] == ["magnitude", "ostr", "ostr_star", "naive"]
    with pytest.raises(CriterionError, match="'bogus'"):
        get_criterion("bogus")


def test_magnitude_and_strength_disagree_when_skip_has_the_largest_alpha():
    state = _state(alpha_best=OPS.index("skip_connect"), strength_best=OPS.index("nor_conv_3x3"))
    magnitude, _ = select("magnitude", NB201, state)
    ostr, selection = select("ostr", NB201, state)
    assert set(magnitude.ops) == {"skip_connect"}
    assert set(ostr.ops) == {"nor_conv_3x3"}
    assert selection.stderr is not None


def test_none_is_never_selected_even_with_the_largest_score():
    state = _state(alpha_best=OPS.index("none"), strength_best=OPS.index("none"))
    state.betas["normal"][:, OPS.index("avg_pool_3x3")] += 0.01
    genotype, _ = select("magnitude", NB201, state)
    assert set(genotype.ops) == {"avg_pool_3x3"}


def test_a_new_criterion_is_one_function(monkeypatch):
    import ostr_ray.core.criteria as criteria_module

    monkeypatch.setattr(criteria_module, "_CRITERIA", dict(criteria_module._CRITERIA))  # leave no trace

    @register_criterion("test_inverse_alpha")
    def inverse_alpha(state: ArchState) -> Selection:
        return Selection(scores={c: -a for c, a in state.alphas.items()})

    state = _state(alpha_best=OPS.index("skip_connect"), strength_best=1)
    state.alphas["normal"][:, OPS.index("nor_conv_1x1")] = -5.0
    genotype, _ = select("test_inverse_alpha", NB201, state)
    assert set(genotype.ops) == {"nor_conv_1x1"}


def test_tracker_counts_stable_epochs_and_stops_after_patience():
    tracker = StabilityTracker(patience=2, min_epochs=0)
    state = _state(1, 3)
    genotype, selection = select("ostr", NB201, state)
    assert tracker.update(NB201, genotype, selection) is True  # first epoch is a change
    assert not tracker.should_stop(1)
    assert tracker.update(NB201, genotype, selection) is False
    assert tracker.stable_for == 1 and not tracker.should_stop(2)
    tracker.update(NB201, genotype, selection)
    assert tracker.stable_for == 2 and tracker.should_stop(3)
    other, other_sel = select("ostr", NB201, _state(1, 2))
    assert tracker.update(NB201, other, other_sel) is True and tracker.stable_for == 0


def test_patience_zero_never_stops_and_min_epochs_delays():
    genotype, selection = select("ostr", NB201, _state(1, 3))
    never = StabilityTracker(patience=0)
    late = StabilityTracker(patience=1, min_epochs=5)
    for epoch in range(1, 5):
        never.update(NB201, genotype, selection)
        late.update(NB201, genotype, selection)
        assert not never.should_stop(epoch)
        assert not late.should_stop(epoch)
    assert late.should_stop(5)


def _flip_states(gap: float, se: float):
    """Epoch A prefers conv3x3 on edge 0, epoch B conv1x1, by `gap`, with standard error `se`."""
    a, b = _state(1, 3, se=se), _state(1, 3, se=se)
    for name in b.mean:
        b.mean[name]["normal"][0, OPS.index("nor_conv_1x1")] = 0.5 + gap
    return a, b


@pytest.mark.parametrize(
    "tie_se,gap,se,expect_change",
    [
        (0.0, 0.001, 0.1, True),  # the paper's rule: any flip is a change
        (2.0, 0.001, 0.1, False),  # within 2 SEs: a tie, not a change
        (2.0, 0.5, 0.01, True),  # decisive flip: a change even under the tie rule
    ],
)
def test_tie_rule(tie_se, gap, se, expect_change):
    first, second = _flip_states(gap, se)
    tracker = StabilityTracker(patience=1, tie_se=tie_se)
    g1, s1 = select("ostr", NB201, first)
    g2, s2 = select("ostr", NB201, second)
    assert g1 != g2
    tracker.update(NB201, g1, s1)
    assert tracker.update(NB201, g2, s2) is expect_change
    assert is_tied_change(NB201, g1, g2, s2, tie_se) is (not expect_change)


def test_edge_decisiveness_is_gap_over_combined_se():
    state = _state(1, 3, se=0.1)
    genotype, selection = select("ostr", NB201, state)
    z = edge_decisiveness(NB201, genotype, selection)["normal"]
    assert z[0] == pytest.approx((0.5 - 0.1) / (0.1 * 2**0.5))
    magnitude, mag_sel = select("magnitude", NB201, state)
    assert edge_decisiveness(NB201, magnitude, mag_sel)["normal"] == [None] * 6
