"""NAS-Bench-201 ground truth: benchmark index <-> cell string <-> metrics.

NB201's index (0..15624) is a permutation stored in the benchmark's files, not computable from a cell
(see :mod:`searchspaces.nb201`), so every map between an index, a cell and its accuracy goes through an
:class:`NB201Table`. Two sources:

* a CSV (``index`` optional, ``arch`` required, any numeric metric columns, e.g. ``cifar10_test``), small
  enough to ship with the project and to test against;
* the benchmark's own files through its optional API packages, for when the full benchmark is at hand: the
  NATS-Bench topology benchmark through ``nats_bench`` (a directory is read in fast mode, one file per cell on
  first use), or NAS-Bench-201's ``.pth`` file through ``nas_201_api``.

The benchmark's six accuracy columns (:data:`NB201_COLUMNS`) are named the same from every source, so a CSV
may hold any subset of them (plus columns of its own) and the reports lay them out as the papers do.
This module never imports torch (``nas_201_api`` does, when its file is read).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from searchspaces.base import SearchSpaceError
from searchspaces.nb201_genotype import NB201Genotype

NB201_COLUMNS: dict[str, tuple[str, str]] = {
    "cifar10_valid": ("cifar10-valid", "valid-accuracy"),
    "cifar10_test": ("cifar10", "test-accuracy"),
    "cifar100_valid": ("cifar100", "valid-accuracy"),
    "cifar100_test": ("cifar100", "test-accuracy"),
    "imagenet16_valid": ("ImageNet16-120", "valid-accuracy"),
    "imagenet16_test": ("ImageNet16-120", "test-accuracy"),
}
"""The benchmark's accuracy columns (%, after the 200-epoch schedule, averaged over its trials), in the papers'
order (each data set's valid, then test), and where the benchmark APIs keep each: ``get_more_info`` of that
data set, that key. As in NB201's paper, CIFAR-10 valid is from the net trained on the train half
(``cifar10-valid``) and CIFAR-10 test from the net trained on train + valid (``cifar10``)."""
BENCHMARK_HP = "200"
"""The benchmark's training schedule whose accuracies are read (NB201's 200 epochs, as in its paper)."""


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
    def from_csv(cls, path: str | Path, metrics: Sequence[str] | None = None) -> NB201Table:
        """Read ``arch`` (+ optional ``index``, default: row number) and the numeric metric columns (those named
        in ``metrics``, default all).

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
        except (UnicodeDecodeError, csv.Error) as err:
            raise NB201TableError(f"NB201 table {path} is not a CSV text file ({type(err).__name__})") from None
        if "arch" not in header:
            raise NB201TableError(f"NB201 table {path} has no 'arch' column (columns: {', '.join(header)})")
        available = [name for name in header if name not in ("arch", "index")]
        missing = [m for m in metrics or () if m not in available]
        if missing:
            raise NB201TableError(
                f"NB201 table {path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})"
            )
        metrics = [m for m in available if m in metrics] if metrics is not None else available
        archs = [_canonical_arch(row["arch"], f"{path} line {line}") for line, row in enumerate(rows, start=2)]
        if "index" in header:
            indices = [_parse_index(row["index"], f"{path} line {line}") for line, row in enumerate(rows, start=2)]
        else:
            indices = list(range(len(rows)))
        columns = {name: _parse_metric(rows, name, path) for name in metrics}
        return cls(archs, indices, columns, source=str(path))

    @classmethod
    def from_nats(cls, path: str | Path, metrics: Sequence[str] | None = None) -> NB201Table:
        """The NATS-Bench topology benchmark (``NATS-tss-v1_0-3ffb9``): a ``-simple`` directory in fast mode
        (one file per cell, read on first use) or the whole ``.pickle.pbz2`` file."""
        try:
            from nats_bench import create
        except ImportError:
            raise NB201TableError(
                f"reading {path} needs the optional nats_bench package: pip install 'ostr-ray[nats]'"
            ) from None
        try:
            api = create(str(path), "tss", fast_mode=Path(path).is_dir(), verbose=False)
        except Exception as err:  # nats_bench raises assorted types for a bad path or file
            raise NB201TableError(f"cannot open NATS-Bench topology benchmark {path}: {err}") from None
        return cls.from_api(api, str(path), metrics)

    @classmethod
    def from_nb201_api(cls, path: str | Path, metrics: Sequence[str] | None = None) -> NB201Table:
        """NAS-Bench-201's own file (``NAS-Bench-201-v1_1-096897.pth``) through ``nas_201_api``."""
        try:
            from nas_201_api import NASBench201API
        except ImportError:
            raise NB201TableError(
                f"reading {path} needs the optional nas_201_api package: pip install nas-bench-201"
            ) from None
        try:
            api = NASBench201API(str(path), verbose=False)
        except Exception as err:  # torch.load and the API's asserts raise assorted types
            raise NB201TableError(f"cannot open NAS-Bench-201 benchmark {path}: {err}") from None
        return cls.from_api(api, str(path), metrics)

    @classmethod
    def from_api(cls, api: Any, source: str, metrics: Sequence[str] | None = None) -> NB201Table:
        """A table over a benchmark API object (``nats_bench`` or ``nas_201_api``: both give ``meta_archs`` and
        ``get_more_info(index, dataset, hp=..., is_random=...)``), reading each cell's ``metrics`` (default:
        all of :data:`NB201_COLUMNS`) on first use; ``is_random=False`` averages the benchmark's trials."""
        metrics = _benchmark_metrics(metrics, source)
        archs = [_canonical_arch(arch, f"{source} index {index}") for index, arch in enumerate(api.meta_archs)]
        datasets = list(dict.fromkeys(NB201_COLUMNS[m][0] for m in metrics))

        def fetch_row(index: int) -> dict[str, float]:
            infos = {d: api.get_more_info(index, d, hp=BENCHMARK_HP, is_random=False) for d in datasets}
            values = {}
            for metric in metrics:
                dataset, key = NB201_COLUMNS[metric]
                value = infos[dataset].get(key)
                values[metric] = math.nan if value is None else float(value)
            return values

        columns = {metric: np.full(len(archs), np.nan) for metric in metrics}
        return cls(archs, range(len(archs)), columns, source=source, fetch_row=fetch_row)

    # -- queries --------------------------------------------------------------------------------------

    @property
    def metrics(self) -> list[str]:
        return list(self._columns)

    @property
    def source(self) -> str:
        return self._source

    @property
    def complete(self) -> bool:
        """Whether every cell's metrics are in memory (a CSV; a benchmark file only once every cell was read),
        so that whole-table questions such as :meth:`best` are cheap."""
        return self._fetched is None or bool(self._fetched.all())

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


def load_nb201_table(path: str | Path, metrics: Sequence[str] | None = None) -> NB201Table:
    """A ``.csv`` file reads as CSV, a ``.pth`` file through ``nas_201_api``, a directory or a ``.pickle``/
    ``.pbz2`` file through ``nats_bench``. ``metrics`` keeps those columns only (default: every column of a
    CSV, all of :data:`NB201_COLUMNS` from a benchmark file)."""
    path = Path(path)
    if not path.exists():
        raise NB201TableError(f"NB201 table {path} does not exist")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".csv":
        return NB201Table.from_csv(path, metrics)
    if path.is_file() and suffix == ".pth":
        return NB201Table.from_nb201_api(path, metrics)
    if path.is_dir() or suffix in (".pickle", ".pbz2"):
        return NB201Table.from_nats(path, metrics)
    raise NB201TableError(
        f"cannot tell the format of NB201 table {path}: expected a .csv, a NAS-Bench-201 .pth or a NATS-Bench path"
    )


def _benchmark_metrics(metrics: Sequence[str] | None, source: str) -> list[str]:
    """The requested benchmark columns in :data:`NB201_COLUMNS` order (all of them when none are named)."""
    if metrics is None:
        return list(NB201_COLUMNS)
    unknown = [m for m in metrics if m not in NB201_COLUMNS]
    if unknown or not metrics:
        raise NB201TableError(
            f"{source}: the benchmark has no column {', '.join(map(repr, unknown)) or '(none named)'}; "
            f"columns are {', '.join(NB201_COLUMNS)}"
        )
    return [m for m in NB201_COLUMNS if m in metrics]


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
