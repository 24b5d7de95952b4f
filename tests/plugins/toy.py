"""``toyline``: a two-edge chain space, and ``cautious``: strength minus two standard errors.

Nothing in ostr_ray knows these names; registering them here is all it takes for them to show up in a search,
the console, the launch summary, MLflow and the evidence report (tests/test_plugins.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ostr_ray.core.criteria import ArchState, Selection, register_criterion, unregister_criterion
from searchspaces import SearchSpace, SearchSpaceError, Supernet, register_space, unregister_space

SPACE, CRITERION = "toyline", "cautious"
OPS = ("none", "identity", "conv3x3")


@dataclass(frozen=True)
class ChainGenotype:
    ops: tuple[str, str]

    def to_str(self) -> str:
        return "chain:" + ">".join(self.ops)

    def to_json(self) -> dict[str, Any]:
        return {"space": SPACE, "ops": list(self.ops)}

    def edge_choices(self) -> dict[str, dict[int, int]]:
        return {"normal": {e: OPS.index(op) for e, op in enumerate(self.ops) if op != "none"}}


def parse(text: str) -> ChainGenotype:
    body = text.removeprefix("chain:")
    ops = tuple(body.split(">"))
    if not text.startswith("chain:") or len(ops) != 2 or any(op not in OPS for op in ops):
        raise SearchSpaceError(f"not a toyline genotype: {text!r}")
    return ChainGenotype(ops)  # type: ignore[arg-type]


def decode(scores: Mapping[str, torch.Tensor], edge_weights: Any = None) -> ChainGenotype:
    rows = scores["normal"].double()
    return ChainGenotype(tuple(OPS[1 + int(row[1:].argmax())] for row in rows))  # type: ignore[arg-type]


class ChainSupernet(Supernet):
    def __init__(self, C: int = 4, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, C, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(C, C, 3, padding=1) for _ in range(2))
        self.head = nn.Linear(C, num_classes)
        self.alphas = nn.ParameterDict({"normal": nn.Parameter(1e-3 * torch.randn(2, len(OPS)))})

    def forward(self, x: torch.Tensor, op_weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        weights = (op_weights or self.op_weights())["normal"]
        x = self.stem(x)
        for edge, conv in enumerate(self.convs):
            x = weights[edge, 1] * x + weights[edge, 2] * torch.relu(conv(x))
        return self.head(x.mean(dim=(2, 3)))


def eval_network(genotype: ChainGenotype, num_classes: int = 10, dataset_kind: str = "cifar", **kw: Any) -> nn.Module:
    C = int(kw.get("C", 8))
    return nn.Sequential(
        nn.Conv2d(3, C, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes)
    )


def register() -> None:
    @register_space(SPACE)
    def toyline() -> SearchSpace:
        return SearchSpace(
            name=SPACE,
            ops=OPS,
            cell_types=("normal",),
            num_edges=2,
            build_supernet=ChainSupernet,
            decode=decode,
            parse_genotype=parse,
            genotype_from_json=lambda data: ChainGenotype(tuple(data["ops"])),
            build_eval_network=eval_network,
            parameter_free_ops=frozenset({"none", "identity"}),
            display_name="Toy chain",
            short_ops={"identity": "id", "conv3x3": "c3"},
            edge_labels=("1<-0", "2<-1"),
        )

    @register_criterion(CRITERION, label="OStr-2SE")
    def cautious(state: ArchState) -> Selection:
        """Operation strength minus two standard errors: a choice that noise alone would not make."""
        scores = {c: m - 2 * state.stderr["ostr"][c] for c, m in state.mean["ostr"].items()}
        return Selection(scores=scores, stderr=state.stderr["ostr"])


def unregister() -> None:
    unregister_space(SPACE)
    unregister_criterion(CRITERION)
