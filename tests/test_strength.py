"""Strength formulas against autograd on a toy mixed op, and the accumulator's statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ostr_ray.core.strength import SCORE_NAMES, StrengthAccumulator, minibatch_scores


def _toy_mixed_op(seed: int = 0):
    """o_bar = sum_o beta_o o_o(x) over 4 fixed random ops, with a nonlinear loss on top."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, generator=gen)
    weights = torch.randn(4, 3, 3, generator=gen)
    outs = torch.stack([torch.tanh(x @ w) for w in weights])  # (O, B, 3)
    alpha = torch.randn(4, generator=gen, dtype=torch.float64).float().requires_grad_()
    beta = torch.softmax(alpha, dim=0)
    beta.retain_grad()
    o_bar = (beta[:, None, None] * outs).sum(0)
    o_bar.retain_grad()
    target = torch.randn(5, 3, generator=gen)
    loss = ((o_bar.sin() - target) ** 2).mean()
    loss.backward()
    return alpha, beta, outs, o_bar


def test_ostr_equals_beta_times_projected_output_gradient():
    alpha, beta, outs, o_bar = _toy_mixed_op()
    projected = (o_bar.grad[None] * (outs - o_bar[None])).sum(dim=(1, 2))
    expected = beta.detach() * projected.abs()
    assert torch.allclose(alpha.grad.abs(), expected, rtol=1e-5, atol=1e-7)


def test_minibatch_scores_match_definitions():
    alpha, beta, _, _ = _toy_mixed_op(seed=3)
    scores = minibatch_scores(alpha.grad[None], beta.detach()[None], beta.grad[None])
    ostr, ostr_star, naive = scores[:, 0]
    assert SCORE_NAMES == ("ostr", "ostr_star", "naive")
    assert torch.allclose(ostr, alpha.grad.abs())
    assert torch.allclose(ostr_star, alpha.grad.abs() / beta.detach())
    assert torch.allclose(naive, (beta.detach() * beta.grad).abs())


def test_naive_score_is_first_order_loss_change_of_removing_an_op():
    """|beta_o dL/d beta_o| approximates |L(beta with op o removed) - L(beta)| for a near-linear loss."""
    gen = torch.Generator().manual_seed(1)
    outs = torch.randn(4, 6, generator=gen)
    beta = torch.tensor([0.4, 0.3, 0.2, 0.1], requires_grad=True)
    target = torch.randn(6, generator=gen)

    def loss_of(b):
        return ((b[:, None] * outs).sum(0) * target).sum() + 1e-4 * ((b[:, None] * outs).sum(0) ** 2).sum()

    loss_of(beta).backward()
    naive = (beta * beta.grad).abs().detach()
    for o in range(4):
        removed = beta.detach().clone()
        removed[o] = 0
        change = abs(float(loss_of(removed) - loss_of(beta.detach())))
        assert naive[o].item() == pytest.approx(change, rel=2e-2)


def test_accumulator_mean_and_standard_error_match_numpy():
    gen = torch.Generator().manual_seed(0)
    acc = StrengthAccumulator()
    readings = []
    for _ in range(7):
        alpha_grad = torch.randn(6, 5, generator=gen)
        beta = torch.softmax(torch.randn(6, 5, generator=gen), dim=-1)
        beta_grad = torch.randn(6, 5, generator=gen)
        acc.add({"normal": alpha_grad}, {"normal": beta}, {"normal": beta_grad})
        readings.append(minibatch_scores(alpha_grad, beta, beta_grad).double().numpy())
    summary = acc.summary()
    stacked = np.stack(readings)  # (n, 3, E, O)
    for i, name in enumerate(SCORE_NAMES):
        np.testing.assert_allclose(summary.mean[name]["normal"].numpy(), stacked[:, i].mean(0), rtol=1e-10)
        se = stacked[:, i].std(0, ddof=1) / np.sqrt(len(readings))
        np.testing.assert_allclose(summary.stderr[name]["normal"].numpy(), se, rtol=1e-6)
    assert summary.minibatches == 7
    acc.reset()
    assert acc.count == 0 and acc.summary().mean["ostr"] == {}


def test_accumulator_state_round_trip():
    acc = StrengthAccumulator()
    acc.add({"normal": torch.ones(2, 3)}, {"normal": torch.full((2, 3), 0.5)}, {"normal": torch.ones(2, 3)})
    clone = StrengthAccumulator()
    clone.load_state_dict(acc.state_dict())
    assert torch.equal(clone.summary().mean["ostr"]["normal"], acc.summary().mean["ostr"]["normal"])
