"""Pure-PyTorch search spaces: NAS-Bench-201, DARTS and PC-DARTS (ops, cells, supernets, genotypes, eval nets).

Importing the package registers every space; ``get_space(name)`` is the one factory.
"""

from searchspaces import darts, nb201, pcdarts  # noqa: F401  (registration side effects)
from searchspaces.base import (
    Genotype,
    Scores,
    SearchSpace,
    SearchSpaceError,
    Supernet,
    get_space,
    list_spaces,
    register_space,
    unregister_space,
)

__all__ = [
    "Genotype",
    "Scores",
    "SearchSpace",
    "SearchSpaceError",
    "Supernet",
    "get_space",
    "list_spaces",
    "register_space",
    "unregister_space",
]
