"""NB201 ground-truth table: CSV reading, lookups, errors, and the shared benchmark's reference points."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ostr_ray.core.nb201_bench import NB201Table, NB201TableError, load_nb201_table
from searchspaces.nb201_genotype import NB201Genotype

SHARED_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nb201" / "nb201_cifar10.csv"

BEST_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
AVG_POOL = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def _write(tmp_path: Path, text: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def tiny_table(tmp_path: Path) -> NB201Table:
    path = _write(
        tmp_path,
        "index,arch,cifar10_test,cifar10_valid\n"
        f"7,{AVG_POOL},85.5,84.0\n"
        f"3,{BEST_CONV},94.36,91.5\n"
        f"11,{ALL_SKIP},54.3,\n",
    )
    return NB201Table.from_csv(path)


def test_tiny_csv_lookups(tiny_table: NB201Table) -> None:
    assert len(tiny_table) == 3
    assert tiny_table.metrics == ["cifar10_test", "cifar10_valid"]
    assert tiny_table.lookup(BEST_CONV) == {"cifar10_test": 94.36, "cifar10_valid": 91.5}
    assert tiny_table.lookup(NB201Genotype.from_string(AVG_POOL))["cifar10_valid"] == 84.0
    assert math.isnan(tiny_table.lookup(ALL_SKIP)["cifar10_valid"])
    assert tiny_table.index_of(BEST_CONV) == 3 and tiny_table.arch_of(11) == ALL_SKIP
    assert BEST_CONV in tiny_table and NB201Genotype.from_string(ALL_SKIP) in tiny_table
    assert "not an arch" not in tiny_table


def test_tiny_csv_best(tiny_table: NB201Table) -> None:
    best = tiny_table.best("cifar10_test")
    assert (best.index, best.arch, best.value) == (3, BEST_CONV, 94.36)
    assert tiny_table.best("cifar10_valid").arch == BEST_CONV  # NaN ignored
    with pytest.raises(NB201TableError, match="'top1'"):
        tiny_table.best("top1")


def test_tiny_csv_query_errors(tiny_table: NB201Table) -> None:
    missing = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(NB201TableError, match=r"\|none~0\|\+"):
        tiny_table.lookup(missing)
    with pytest.raises(NB201TableError, match="12345"):
        tiny_table.arch_of(12345)
    with pytest.raises(NB201TableError, match="conv_9x9"):
        tiny_table.index_of("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def test_csv_without_index_column_numbers_rows(tmp_path: Path) -> None:
    table = load_nb201_table(_write(tmp_path, f"arch,acc\n{ALL_SKIP},1\n{BEST_CONV},2\n"))
    assert table.index_of(BEST_CONV) == 1 and table.arch_of(0) == ALL_SKIP


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("index,acc\n0,1.0\n", "no 'arch' column"),
        (f"arch,acc\n{ALL_SKIP},high\n", "'high'"),
        ("arch,acc\n|skip_connect~0|+|bogus~0|none~1|+|none~0|none~1|none~2|,1\n", "bogus"),
        (f"index,arch,acc\nzero,{ALL_SKIP},1\n", "'zero'"),
        (f"arch,acc\n{ALL_SKIP},1\n{ALL_SKIP},2\n", "appears twice"),
        ("", "no 'arch' column"),
    ],
)
def test_bad_csv_files_raise_one_line_errors(tmp_path: Path, text: str, bad: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(NB201TableError) as info:
        NB201Table.from_csv(path)
    message = str(info.value)
    assert bad in message and str(path) in message and "\n" not in message


def test_missing_or_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(NB201TableError, match="nope.csv"):
        NB201Table.from_csv(tmp_path / "nope.csv")
    with pytest.raises(NB201TableError, match="does not exist"):
        load_nb201_table(tmp_path / "nope.csv")
    with pytest.raises(NB201TableError, match="format"):
        load_nb201_table(_write(tmp_path, "x", name="table.txt"))
    assert issubclass(NB201TableError, ValueError)


# ------------------------------------------------------------------------------------------ shared benchmark

needs_shared = pytest.mark.skipif(
    not SHARED_CSV.is_file(), reason=f"shared NB201 table not found at {SHARED_CSV.resolve()}"
)


@pytest.fixture(scope="module")
def shared_table() -> NB201Table:
    return load_nb201_table(SHARED_CSV)


@needs_shared
def test_shared_table_index_round_trip(shared_table: NB201Table) -> None:
    assert len(shared_table) == 5**6 and shared_table.metrics == ["cifar10_test"]
    codes = set()
    for index in range(len(shared_table)):
        arch = shared_table.arch_of(index)
        assert shared_table.index_of(arch) == index
        codes.add(NB201Genotype.from_string(arch).code)
    assert codes == set(range(5**6))  # the table covers the whole space exactly once


@needs_shared
def test_shared_table_reference_points(shared_table: NB201Table) -> None:
    best = shared_table.best("cifar10_test")
    assert best.value == pytest.approx(94.3733)
    assert shared_table.lookup(best.arch)["cifar10_test"] == pytest.approx(94.3733)
    assert shared_table.lookup(ALL_SKIP)["cifar10_test"] == pytest.approx(54.2967)
    assert shared_table.lookup(BEST_CONV)["cifar10_test"] == pytest.approx(94.3633)
    assert shared_table.arch_of(0).startswith("|avg_pool_3x3~0|")  # NB201's index is not our code
