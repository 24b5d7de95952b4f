"""Operation strength and its variants, read off the gradients the architecture step already computes.

For a mixed op ``o_bar = sum_o beta_o o(x)`` with ``beta = softmax(alpha)``, one minibatch ``b`` gives

* OStr       ``|dL/d alpha_o|``            (= ``beta_o |dL/d o_bar . (o_o - o_bar)|``),
* OStr*      ``|dL/d alpha_o| / beta_o``,
* naive      ``|beta_o dL/d beta_o|``      (first-order loss change when op ``o`` is removed),

and a score is the mean over the epoch's minibatches. The accumulator keeps per-minibatch sums and sums of
squares on the device (no host synchronisation in the step), so every score also has a standard error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

SCORE_NAMES = ("ostr", "ostr_star", "naive")


def minibatch_scores(alpha_grad: torch.Tensor, beta: torch.Tensor, beta_grad: torch.Tensor) -> torch.Tensor:
    """The three per-minibatch scores stacked as ``(3, E, O)``, in :data:`SCORE_NAMES` order."""
    abs_alpha_grad = alpha_grad.abs()
    return torch.stack((abs_alpha_grad, abs_alpha_grad / beta, (beta * beta_grad).abs()))


@dataclass
class ScoreSummary:
    """Epoch means and standard errors: score name -> cell type -> (E, O) float64 CPU tensors."""

    mean: dict[str, dict[str, torch.Tensor]]
    stderr: dict[str, dict[str, torch.Tensor]]
    minibatches: int


class StrengthAccumulator:
    """Running per-minibatch sums of the three scores per cell type; reset every epoch."""

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor] = {}
        self._sumsq: dict[str, torch.Tensor] = {}
        self.count = 0

    def reset(self) -> None:
        self._sum.clear()
        self._sumsq.clear()
        self.count = 0

    @torch.no_grad()
    def add(
        self,
        alpha_grads: Mapping[str, torch.Tensor],
        betas: Mapping[str, torch.Tensor],
        beta_grads: Mapping[str, torch.Tensor],
    ) -> None:
        """Add one architecture step's reading. Accumulates in float64: sums over hundreds of steps."""
        for cell, alpha_grad in alpha_grads.items():
            scores = minibatch_scores(alpha_grad.detach(), betas[cell].detach(), beta_grads[cell]).double()
            if cell in self._sum:
                self._sum[cell].add_(scores)
                self._sumsq[cell].add_(scores.square())
            else:
                self._sum[cell] = scores.clone()
                self._sumsq[cell] = scores.square()
        self.count += 1

    def summary(self) -> ScoreSummary:
        """Means and standard errors (sample std / sqrt(n); zero with fewer than two minibatches)."""
        mean: dict[str, dict[str, torch.Tensor]] = {name: {} for name in SCORE_NAMES}
        stderr: dict[str, dict[str, torch.Tensor]] = {name: {} for name in SCORE_NAMES}
        n = self.count
        for cell, total in self._sum.items():
            cell_mean = total.cpu() / n
            if n > 1:
                var = ((self._sumsq[cell].cpu() - n * cell_mean.square()) / (n - 1)).clamp_min(0)
                cell_se = (var / n).sqrt()
            else:
                cell_se = torch.zeros_like(cell_mean)
            for i, name in enumerate(SCORE_NAMES):
                mean[name][cell] = cell_mean[i]
                stderr[name][cell] = cell_se[i]
        return ScoreSummary(mean=mean, stderr=stderr, minibatches=n)

    def state_dict(self) -> dict:
        return {"sum": dict(self._sum), "sumsq": dict(self._sumsq), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self._sum = dict(state["sum"])
        self._sumsq = dict(state["sumsq"])
        self.count = int(state["count"])
