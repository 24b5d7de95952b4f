"""The contract every search space fulfils, and the registry that names them.

A search space is one registration: a :class:`SearchSpace` record naming its ops, its cell types, the
shape of its architecture parameters, and factories for the supernet, the genotype decoder and the
evaluation network. Everything above this layer (the search core, Ray, MLflow) talks to spaces only
through this record, so adding a space never touches the search loop.

Conventions shared by all spaces
--------------------------------
* Architecture scores (alpha, operation strength, any criterion's scores) are a ``dict`` mapping a cell
  type (``"normal"``, and ``"reduce"`` for DARTS-like spaces) to a float tensor of shape
  ``(num_edges, num_ops)``; row ``e`` is edge ``e`` in the space's canonical edge order, column ``o`` is
  ``space.ops[o]``.
* A supernet keeps its op-level alphas in ``supernet.alphas`` (an ``nn.ParameterDict`` keyed by cell type)
  and takes the op mixing weights as an explicit argument, ``supernet(x, op_weights)``, so the search loop
  can build ``beta = softmax(alpha)`` itself and read ``dL/d beta`` off the architecture step's backward
  pass without a second forward (that is what the naive-pruning score needs).
* Genotypes are immutable and hashable (equality = same architecture), render to a short string with
  ``str()`` / ``to_str()``, round-trip through ``to_json()`` / the space's ``genotype_from_json``, and expose
  ``edge_choices()``: cell type -> {edge row: op index} for the edges the genotype keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

Scores = Mapping[str, torch.Tensor]
AUXILIARY_PREFIX = "auxiliary_head"
"""Module name of an evaluation network's auxiliary head: papers count parameters without it."""


class SearchSpaceError(ValueError):
    """Bad input to a search space: unknown names, malformed genotypes, out-of-range indices."""


@runtime_checkable
class Genotype(Protocol):
    """What the rest of the product needs from a discrete architecture."""

    def to_str(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...

    def edge_choices(self) -> dict[str, dict[int, int]]: ...


class Supernet(nn.Module):
    """Base class of the weight-sharing supernets.

    Subclasses create ``self.alphas`` (``nn.ParameterDict``: cell type -> (E, O) tensor) and, where the space
    has them, ``self.edge_alphas`` (PC-DARTS edge normalisation: cell type -> (E,) tensor), and implement
    :meth:`forward`.
    """

    alphas: nn.ParameterDict
    # No class-level default for ``edge_alphas``: a class attribute would shadow the submodule that
    # nn.Module registers on assignment. Spaces without edge normalisation simply never set it.

    def arch_parameters(self) -> list[nn.Parameter]:
        """Op alphas first (cell-type order), then edge alphas: the search loop relies on this order."""
        params = list(self.alphas.values())
        edge_alphas = self._modules.get("edge_alphas")
        if edge_alphas is not None:
            params += list(edge_alphas.values())
        return params

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> dict[str, torch.Tensor]:
        """beta = softmax(alpha) per cell type: the default mixing weights of :meth:`forward`."""
        return {name: torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}

    def edge_weights(self) -> dict[str, torch.Tensor]:
        """Edge-normalisation weights per cell type, (E,) each; empty for spaces without them."""
        return {}

    def forward(self, x: torch.Tensor, op_weights: Scores | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class SearchSpace:
    """One registered search space. See the module docstring for the conventions."""

    name: str
    ops: tuple[str, ...]
    cell_types: tuple[str, ...]
    num_edges: int
    build_supernet: Callable[..., Supernet]
    decode: Callable[..., Genotype]
    """``decode(scores, edge_weights=None) -> Genotype``; ``edge_weights`` (cell type -> (E,)) multiply into the
    scores edge-wise when given (PC-DARTS magnitude selection)."""
    parse_genotype: Callable[[str], Genotype]
    """Genotype from its string form (NB201 string) or a JSON text."""
    genotype_from_json: Callable[[Mapping[str, Any]], Genotype]
    build_eval_network: Callable[..., nn.Module]
    """``build_eval_network(genotype, num_classes=..., dataset_kind="cifar", **protocol_kwargs)``; its forward
    returns ``(logits, aux_logits_or_None)``. ``dataset_kind`` names the network family ("cifar": 32x32
    inputs, "imagenet": 224x224); a space without one raises :class:`SearchSpaceError`."""
    parameter_free_ops: frozenset[str]
    # -- what the edges (console, MLflow, reports, retraining) need to know; all optional ----------------
    display_name: str = ""
    """Name in reports and tables (``"NAS-Bench-201"``); defaults to ``name``."""
    short_ops: Mapping[str, str] = field(default_factory=dict)
    """op -> short name for tables, plots and compact genotype strings; ops not listed keep their name."""
    edge_labels: tuple[str, ...] = ()
    """One label per alpha row (heatmap rows, per-edge tables); default ``e0, e1, ...``."""
    cell_drawing: str | None = None
    """Which registered cell diagram draws this space's genotypes (``"nb201"``, ``"darts"``); None = none."""
    default_preset: str | None = None
    """The search preset ``ostr-ray launch --spaces <name>`` runs."""
    default_protocols: Mapping[str, str] = field(default_factory=dict)
    """Retraining protocol per data set (``"default"`` for any other): what ``ostr-ray retrain`` uses."""
    benchmark: str | None = None
    """A tabular benchmark this space's genotypes index (``"nb201"``): enables ground-truth lookups."""

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def short_op(self, op: str) -> str:
        return self.short_ops.get(op, op)

    def row_labels(self) -> list[str]:
        return (
            list(self.edge_labels)
            if len(self.edge_labels) == self.num_edges
            else [f"e{row}" for row in range(self.num_edges)]
        )

    def compact(self, genotype_text: str) -> str:
        """A genotype string with short op names (longest names first, so no name eats part of another)."""
        for op in sorted(self.short_ops, key=len, reverse=True):
            genotype_text = genotype_text.replace(op, self.short_ops[op])
        return genotype_text

    def protocol_for(self, dataset: str) -> str | None:
        return self.default_protocols.get(dataset) or self.default_protocols.get("default")

    @property
    def alpha_shape(self) -> tuple[int, int]:
        return (self.num_edges, len(self.ops))

    def op_index(self, op: str) -> int:
        try:
            return self.ops.index(op)
        except ValueError:
            raise SearchSpaceError(
                f"unknown op {op!r} for space {self.name!r}; ops are {', '.join(self.ops)}"
            ) from None


_REGISTRY: dict[str, Callable[[], SearchSpace]] = {}


def register_space(name: str) -> Callable[[Callable[[], SearchSpace]], Callable[[], SearchSpace]]:
    """Decorator registering a zero-argument factory that returns the space's :class:`SearchSpace`."""

    def wrap(factory: Callable[[], SearchSpace]) -> Callable[[], SearchSpace]:
        if name in _REGISTRY:
            raise SearchSpaceError(f"search space {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def unregister_space(name: str) -> None:
    """Remove a space (tests and notebooks that register temporary ones)."""
    _REGISTRY.pop(name, None)


def get_space(name: str) -> SearchSpace:
    """The space registered as ``name``; a clear error naming the bad value otherwise."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise SearchSpaceError(f"unknown search space {name!r}; choose from {', '.join(sorted(_REGISTRY))}") from None
    return factory()


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)
