"""NAS-Bench-201 ground truth: benchmark index <-> cell string <-> metrics.

NB201's index (0..15624) is a permutation stored in the benchmark's files, not computable from a cell
(see :mod:`searchspaces.nb201`), so every map between an index, a cell and its accuracy goes through an
:class:`NB201Table`. Two sources:

* a CSV (``index`` optional, ``arch`` required, any numeric metric columns, e.g. ``cifar10_test``), small
  enough to ship with the project and to test against;
* the NATS-Bench topology files through the optional ``nats_bench`` package (fast mode: one file per cell,
  read on first use and cached), for when the full benchmark is at hand.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from searchspaces.base import SearchSpaceError
from searchspaces.nb201_genotype import NB201Genotype

NATS_METRIC = "cifar10_test"
"""The NATS-backed table's one metric: CIFAR-10 test accuracy (%) after NB201's 200-epoch schedule."""


class NB201TableError(ValueError):
    """A benchmark table that cannot be read, or a query it cannot answer."""


class NB201Entry(NamedTuple):
    index: int
    arch: str
    value: float


Arch = NB201Genotype | str


class NB201Table:
    """Benchmark rows keyed by cell string and by NB201 index; metrics kept as one numpy array per column.

    ``fetch_row``, when given, fills a row's metrics on first access (NATS fast mode); values not yet
    fetched are NaN in the arrays.
    """

    def __init__(
        self,
        archs: Sequence[str],
        indices: Sequence[int],
        columns: Mapping[str, np.ndarray],
        source: str,
        fetch_row: Callable[[int], Mapping[str, float]] | None = None,
    ) -> None:
        self._source = source
        self._archs = list(archs)
        self._indices = np.asarray(indices, dtype=np.int64)
        self._columns = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
        self._row_of_arch = _unique_positions(self._archs, "arch", source)
        self._row_of_index = _unique_positions(self._indices.tolist(), "index", source)
        self._fetch_row = fetch_row
        self._fetched = np.zeros(len(self._archs), dtype=bool) if fetch_row is not None else None

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | Path) -> NB201Table:
        """Read ``arch`` (+ optional ``index``, default: row number) and numeric metric columns.

        Empty metric cells read as NaN; anything else that is not a number is an error.
        """
        path = Path(path)
        try:
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                header = [name.strip() for name in reader.fieldnames or []]
                reader.fieldnames = header
                rows = list(reader)
        except OSError as err:
            raise NB201TableError(f"cannot read NB201 table {path}: {err.strerror or err}") from None
        if "arch" not in header:
            raise NB201TableError(f"NB201 table {path} has no 'arch' column (columns: {', '.join(header)})")
        metrics = [name for name in header if name not in ("arch", "index")]
        archs = [_canonical_arch(row["arch"], f"{path} line {line}") for line, row in enumerate(rows, start=2)]
        if "index" in header:
            indices = [_parse_index(row["index"], f"{path} line {line}") for line, row in enumerate(rows, start=2)]
        else:
            indices = list(range(len(rows)))
        columns = {name: _parse_metric(rows, name, path) for name in metrics}
        return cls(archs, indices, columns, source=str(path))

    @classmethod
    def from_nats(cls, path: str | Path) -> NB201Table:
        """The NATS-Bench topology benchmark (``NATS-tss-v1_0-3ffb9-simple``), queried lazily and cached.

        Its one metric, ``cifar10_test``, is CIFAR-10 test accuracy at 200 epochs (``hp="200"``), read per
        cell on first use so memory stays small.
        """
        try:
            from nats_bench import create
        except ImportError:
            raise NB201TableError(
                f"reading {path} needs the optional nats_bench package: pip install 'ostr-ray[nats]'"
            ) from None
        try:
            api = create(str(path), "tss", fast_mode=True, verbose=False)
        except Exception as err:  # nats_bench raises assorted types for a bad path or file
            raise NB201TableError(f"cannot open NATS-Bench topology benchmark {path}: {err}") from None
        archs = [_canonical_arch(arch, f"{path} index {index}") for index, arch in enumerate(api.meta_archs)]

        def fetch_row(index: int) -> dict[str, float]:
            info = api.get_more_info(index, "cifar10", hp="200", is_random=False)
            return {NATS_METRIC: float(info["test-accuracy"])}

        columns = {NATS_METRIC: np.full(len(archs), np.nan)}
        return cls(archs, range(len(archs)), columns, source=str(path), fetch_row=fetch_row)

    # -- queries --------------------------------------------------------------------------------------

    @property
    def metrics(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        return len(self._archs)

    def __contains__(self, arch: object) -> bool:
        try:
            return _arch_key(arch) in self._row_of_arch
        except NB201TableError:
            return False

    def index_of(self, arch: Arch) -> int:
        """NB201's index of a cell (a genotype or its string)."""
        return int(self._indices[self._row(arch)])

    def arch_of(self, index: int) -> str:
        """The cell string at NB201's ``index``."""
        try:
            return self._archs[self._row_of_index[int(index)]]
        except (KeyError, TypeError, ValueError):
            raise NB201TableError(f"NB201 index {index!r} is not in table {self._source}") from None

    def lookup(self, arch: Arch) -> dict[str, float]:
        """Every metric of a cell, ``{metric: value}``."""
        row = self._row(arch)
        self._ensure_fetched(range(row, row + 1))
        return {name: float(values[row]) for name, values in self._columns.items()}

    def best(self, metric: str) -> NB201Entry:
        """The cell with the highest ``metric`` (NaNs ignored; ties go to the first row).

        On a NATS-backed table this reads every cell once (slow the first time, cached after).
        """
        values = self._column(metric)
        self._ensure_fetched(range(len(self)))
        if np.isnan(values).all():
            raise NB201TableError(f"metric {metric!r} of table {self._source} has no values")
        row = int(np.nanargmax(values))
        return NB201Entry(int(self._indices[row]), self._archs[row], float(values[row]))

    # -- internals ------------------------------------------------------------------------------------

    def _row(self, arch: object) -> int:
        key = _arch_key(arch)
        try:
            return self._row_of_arch[key]
        except KeyError:
            raise NB201TableError(f"NB201 cell {key} is not in table {self._source}") from None

    def _column(self, metric: str) -> np.ndarray:
        try:
            return self._columns[metric]
        except KeyError:
            raise NB201TableError(
                f"unknown metric {metric!r} in table {self._source}; metrics are {', '.join(self.metrics)}"
            ) from None

    def _ensure_fetched(self, rows: Iterable[int]) -> None:
        if self._fetch_row is None or self._fetched is None:
            return
        for row in rows:
            if not self._fetched[row]:
                for name, value in self._fetch_row(int(self._indices[row])).items():
                    self._columns[name][row] = value
                self._fetched[row] = True


def load_nb201_table(path: str | Path) -> NB201Table:
    """A ``.csv`` file reads as CSV; a directory or a ``.pickle``/``.pth`` file goes through NATS-Bench."""
    path = Path(path)
    if not path.exists():
        raise NB201TableError(f"NB201 table {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".csv":
        return NB201Table.from_csv(path)
    if path.is_dir() or path.suffix.lower() in (".pickle", ".pth", ".pbz2"):
        return NB201Table.from_nats(path)
    raise NB201TableError(f"cannot tell the format of NB201 table {path}: expected a .csv or a NATS-Bench path")


def _arch_key(arch: object) -> str:
    if isinstance(arch, NB201Genotype):
        return arch.to_str()
    if isinstance(arch, str):
        return _canonical_arch(arch, "query")
    raise NB201TableError(f"an NB201 cell is a NB201Genotype or its string, got {type(arch).__name__}")


def _canonical_arch(text: str, where: str) -> str:
    try:
        return NB201Genotype.from_string(text).to_str()
    except SearchSpaceError as err:
        raise NB201TableError(f"{where}: {err}") from None


def _parse_index(text: str | None, where: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise NB201TableError(f"{where}: index {text!r} is not an integer") from None


def _parse_metric(rows: list[dict[str, str]], name: str, path: Path) -> np.ndarray:
    values = np.empty(len(rows), dtype=np.float64)
    for position, row in enumerate(rows):
        text = (row.get(name) or "").strip()
        try:
            values[position] = float(text) if text else math.nan
        except ValueError:
            raise NB201TableError(
                f"{path} line {position + 2}: metric {name!r} value {text!r} is not a number"
            ) from None
    return values


def _unique_positions(keys: Sequence[object], what: str, source: str) -> dict:
    positions: dict = {}
    for position, key in enumerate(keys):
        if key in positions:
            raise NB201TableError(f"NB201 table {source}: {what} {key!r} appears twice")
        positions[key] = position
    return positions
