"""Algorithm 1 of OStr-DARTS: stop once the selected architecture is unchanged for C epochs.

With ``tie_se = k > 0`` an edge whose op changed between two leading ops that are within k standard errors
of each other does not count as a change: at CPU-proxy scale strength flips between near-tied conv1x1 and
conv3x3 from epoch to epoch, and the plain rule would then never fire. ``tie_se = 0`` is the paper's rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ostr_ray.core.criteria import Selection
from searchspaces import Genotype, SearchSpace


def edge_decisiveness(space: SearchSpace, genotype: Genotype, selection: Selection) -> dict[str, list[float | None]]:
    """Per cell type and edge row: (chosen - runner-up) / combined standard error, for the kept edges.

    ``None`` where the edge is not kept or the criterion has no standard errors (magnitude). Large means
    decisive; below ~2 the choice is within noise.
    """
    none = space.op_index("none") if "none" in space.ops else -1
    result: dict[str, list[float | None]] = {}
    for cell, choices in genotype.edge_choices().items():
        row_values: list[float | None] = [None] * space.num_edges
        if selection.stderr is not None:
            scores, stderr = selection.scores[cell].double(), selection.stderr[cell].double()
            for edge, op in choices.items():
                rivals = [o for o in range(len(space.ops)) if o not in (op, none)]
                if not rivals:
                    continue
                runner_up = max(rivals, key=lambda o: float(scores[edge, o]))
                gap = float(scores[edge, op] - scores[edge, runner_up])
                se = math.hypot(float(stderr[edge, op]), float(stderr[edge, runner_up]))
                row_values[edge] = gap / se if se > 0 else None
        result[cell] = row_values
    return result


def is_tied_change(space: SearchSpace, old: Genotype, new: Genotype, selection: Selection, tie_se: float) -> bool:
    """True when every edge that differs kept its place and swapped between ops within ``tie_se`` SEs."""
    if tie_se <= 0 or selection.stderr is None:
        return False
    old_choices, new_choices = old.edge_choices(), new.edge_choices()
    for cell in new_choices:
        before, after = old_choices.get(cell, {}), new_choices[cell]
        if before.keys() != after.keys():
            return False  # a different set of edges (DARTS node inputs) is a real change
        scores, stderr = selection.scores[cell].double(), selection.stderr[cell].double()
        for edge, op in after.items():
            prev = before[edge]
            if prev == op:
                continue
            gap = abs(float(scores[edge, op] - scores[edge, prev]))
            if gap > tie_se * math.hypot(float(stderr[edge, op]), float(stderr[edge, prev])):
                return False
    return True


@dataclass
class StabilityTracker:
    """Epochs since one criterion's genotype last changed, and Algorithm 1's stop decision."""

    patience: int = 0
    min_epochs: int = 0
    tie_se: float = 0.0
    last: str | None = None
    stable_for: int = 0

    def update(self, space: SearchSpace, genotype: Genotype, selection: Selection) -> bool:
        """Record this epoch's genotype; returns whether it counts as changed."""
        text = genotype.to_str()
        if self.last is None:
            changed = True
        elif text == self.last:
            changed = False
        else:
            old = space.parse_genotype(self.last)
            changed = not is_tied_change(space, old, genotype, selection, self.tie_se)
        self.stable_for = 0 if changed else self.stable_for + 1
        self.last = text
        return changed

    def should_stop(self, epochs_done: int) -> bool:
        return self.patience > 0 and epochs_done >= self.min_epochs and self.stable_for >= self.patience

    def state_dict(self) -> dict:
        return {"last": self.last, "stable_for": self.stable_for}

    def load_state_dict(self, state: dict) -> None:
        self.last, self.stable_for = state["last"], int(state["stable_for"])
