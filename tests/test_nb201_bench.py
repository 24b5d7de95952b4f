"""NB201 ground truth and conventions: CSV and benchmark-API tables (any of the six columns), lookups, errors, the
shared benchmark's reference points, and the decoder's treatment of 'none' (``nb201_none``)."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest
import torch

from ostr_ray.core.nb201_bench import NB201_COLUMNS, NB201Table, NB201TableError, load_nb201_table
from searchspaces.base import SearchSpaceError
from searchspaces.nb201_genotype import NB201Genotype, decode

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


# ------------------------------------------------------------------------------------------ the six columns

SIX = ("cifar10_valid", "cifar10_test", "cifar100_valid", "cifar100_test", "imagenet16_valid", "imagenet16_test")


def test_the_six_benchmark_columns_in_the_papers_order() -> None:
    assert tuple(NB201_COLUMNS) == SIX
    assert NB201_COLUMNS["cifar10_valid"] == ("cifar10-valid", "valid-accuracy")  # trained on the train half
    assert NB201_COLUMNS["cifar10_test"] == ("cifar10", "test-accuracy")  # trained on train + valid


def test_a_csv_reads_any_subset_of_its_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "arch,imagenet16_test,cifar100_valid,cifar100_test,flops\n"
        f"{BEST_CONV},46.5,73.0,73.5,80\n"
        f"{ALL_SKIP},15.0,24.5,25.0,1\n",
    )
    assert load_nb201_table(path).metrics == ["imagenet16_test", "cifar100_valid", "cifar100_test", "flops"]
    table = load_nb201_table(path, metrics=["cifar100_test", "cifar100_valid"])
    assert table.metrics == ["cifar100_valid", "cifar100_test"]  # the file's order
    assert table.lookup(BEST_CONV) == {"cifar100_valid": 73.0, "cifar100_test": 73.5}
    assert table.complete and table.best("cifar100_test").arch == BEST_CONV
    with pytest.raises(NB201TableError, match="'cifar10_test'"):
        load_nb201_table(path, metrics=["cifar10_test"])


class FakeBenchmarkAPI:
    """What ``nats_bench.create(...)`` and ``nas_201_api.NASBench201API(...)`` give: ``meta_archs`` and
    ``get_more_info`` with the keys the real APIs return (cifar10-valid has no test, cifar10 no valid)."""

    KEYS = {
        "cifar10-valid": ("valid-accuracy",),
        "cifar10": ("test-accuracy",),
        "cifar100": ("valid-accuracy", "test-accuracy"),
        "ImageNet16-120": ("valid-accuracy", "test-accuracy"),
    }
    BASE = {"cifar10-valid": 90.0, "cifar10": 93.0, "cifar100": 70.0, "ImageNet16-120": 45.0}

    def __init__(self, archs: list[str]) -> None:
        self.meta_archs = archs
        self.calls: list[tuple] = []

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        self.calls.append((index, dataset, hp, is_random))
        info = {"train-accuracy": 99.0}
        for key in self.KEYS[dataset]:
            info[key] = self.BASE[dataset] + index + (0.5 if key == "test-accuracy" else 0.0)
        return info


ARCHS = [AVG_POOL, BEST_CONV, ALL_SKIP]


def test_a_benchmark_api_gives_every_column_read_lazily() -> None:
    api = FakeBenchmarkAPI(ARCHS)
    table = NB201Table.from_api(api, "fake")
    assert table.metrics == list(SIX) and not table.complete and not api.calls
    assert table.lookup(BEST_CONV) == {
        "cifar10_valid": 91.0,
        "cifar10_test": 94.5,
        "cifar100_valid": 71.0,
        "cifar100_test": 71.5,
        "imagenet16_valid": 46.0,
        "imagenet16_test": 46.5,
    }
    # one query per data set, averaged over the benchmark's trials, at its 200-epoch schedule
    assert api.calls == [(1, d, "200", False) for d in ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")]
    table.lookup(BEST_CONV)
    assert len(api.calls) == 4  # cached
    assert table.index_of(ALL_SKIP) == 2 and table.best("cifar10_test").arch == ALL_SKIP and table.complete
    subset = NB201Table.from_api(FakeBenchmarkAPI(ARCHS), "fake", metrics=["imagenet16_test", "cifar10_valid"])
    assert subset.metrics == ["cifar10_valid", "imagenet16_test"]
    assert subset.lookup(AVG_POOL) == {"cifar10_valid": 90.0, "imagenet16_test": 45.5}
    with pytest.raises(NB201TableError, match="'top1'"):
        NB201Table.from_api(FakeBenchmarkAPI(ARCHS), "fake", metrics=["top1"])


def test_nats_and_nb201_files_go_through_their_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []

    def create(path, search_space, fast_mode=False, verbose=True):
        opened.append(("nats", path, search_space, fast_mode))
        return FakeBenchmarkAPI(ARCHS)

    class NASBench201API(FakeBenchmarkAPI):
        def __init__(self, path, verbose=True):
            opened.append(("nb201", path))
            super().__init__(ARCHS)

    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=create))
    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=NASBench201API))
    folder = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    folder.mkdir()
    archive = _write(tmp_path, "", name="NATS-tss-v1_0-3ffb9-full.pickle.pbz2")
    pth = _write(tmp_path, "", name="NAS-Bench-201-v1_1-096897.pth")
    for path in (folder, archive, pth):
        assert load_nb201_table(path).lookup(BEST_CONV)["cifar100_test"] == 71.5
    assert opened == [
        ("nats", str(folder), "tss", True),  # a directory: fast mode, one file per cell
        ("nats", str(archive), "tss", False),
        ("nb201", str(pth)),
    ]
    assert load_nb201_table(pth, metrics=["cifar10_test"]).metrics == ["cifar10_test"]


def test_missing_benchmark_packages_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # import fails
    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    with pytest.raises(NB201TableError, match="nats_bench"):
        load_nb201_table(_write(tmp_path, "", name="b.pickle.pbz2"))
    with pytest.raises(NB201TableError, match="nas_201_api"):
        load_nb201_table(_write(tmp_path, "", name="b.pth"))


# ------------------------------------------------------------------------------------------ the decoder convention


def _scores(none_row: float) -> dict[str, torch.Tensor]:
    """Every edge: 'none' scores ``none_row``, the other ops 0.1, 0.3, 0.2, 0.0 (conv1x1 best among them)."""
    row = [none_row, 0.1, 0.3, 0.2, 0.0]
    return {"normal": torch.tensor([row] * 6, dtype=torch.float64)}


def test_nb201_decoder_excludes_or_includes_none() -> None:
    assert decode(_scores(0.9)).ops == ("nor_conv_1x1",) * 6  # exclude: the authors' code (default)
    assert decode(_scores(0.9), nb201_none="include").ops == ("none",) * 6  # xautodl's argmax over all ops
    assert decode(_scores(0.3), nb201_none="include").ops == ("none",) * 6  # a tie goes to the lowest index
    assert decode(_scores(0.2), nb201_none="include").ops == ("nor_conv_1x1",) * 6
    with pytest.raises(SearchSpaceError, match="nb201_none"):
        decode(_scores(0.9), nb201_none="sometimes")


def test_the_search_passes_the_convention_only_to_decoders_that_take_it() -> None:
    from ostr_ray.core.config import ConfigError, config_from_dict, decoder_settings, with_decoder_settings
    from searchspaces import get_space

    nb201, darts = get_space("nb201"), get_space("darts")
    assert decoder_settings(nb201) == ["nb201_none"] and decoder_settings(darts) == []
    include = config_from_dict({"space": "nb201", "nb201_none": "include"})
    assert with_decoder_settings(nb201, include).decode(_scores(0.9)).ops == ("none",) * 6
    assert with_decoder_settings(nb201, config_from_dict({})).decode(_scores(0.9)).ops == ("nor_conv_1x1",) * 6
    assert with_decoder_settings(darts, config_from_dict({"space": "darts"})) == darts  # untouched
    with pytest.raises(ConfigError, match="nb201_none applies"):
        config_from_dict({"space": "darts", "nb201_none": "include"})
    with pytest.raises(ConfigError, match="nb201_none must be"):
        config_from_dict({"nb201_none": "maybe"})
    # a setting of selection, not of training: checkpoints resume across it
    assert include.fingerprint() == config_from_dict({"space": "nb201"}).fingerprint()


def test_a_searcher_selects_with_its_configured_convention() -> None:
    from ostr_ray.core.config import config_from_dict
    from ostr_ray.core.criteria import ArchState, select
    from ostr_ray.core.search import Searcher
    from tests.conftest import tiny_overrides

    searcher = Searcher(config_from_dict(tiny_overrides(nb201_none="include")))
    scores = _scores(0.9)
    state = ArchState(alphas=scores, betas=scores, mean={"ostr": scores}, stderr={"ostr": scores})
    genotype, _ = select("ostr", searcher.space, state)
    assert genotype.ops == ("none",) * 6
