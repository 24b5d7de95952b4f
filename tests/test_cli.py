"""The `search` and `nb201` commands: a real run, resume, and one-line errors with exit status 2; and how every
command's flags arrive: as the settings objects the layers below declare, filled in and handed on whole."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ostr_ray.cli import app
from ostr_ray.cli import launch as launch_command
from ostr_ray.orchestration.spec import ClusterOptions, DataOptions, LaunchError, LaunchOptions, StopOptions
from tests.conftest import REPO, as_set, tiny_overrides

runner = CliRunner()


def _sets(**extra) -> list[str]:
    return [arg for text in as_set(tiny_overrides(**extra)) for arg in ("--set", text)]


def test_search_writes_checkpoint_and_report_then_resumes(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", "--preset", "demo", "--quiet", "--out", str(out), *_sets(epochs=2)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["epochs_done"] == 2 and set(report["final_genotypes"]) >= {"magnitude", "ostr"}
    assert (out / "checkpoint.pt").is_file()
    more = runner.invoke(app, ["search", "--resume", str(out), "--epochs", "3", "--quiet"])
    assert more.exit_code == 2 and "differing settings: epochs" in more.output  # a longer schedule is another search
    again = runner.invoke(app, ["search", "--resume", str(out), "--quiet"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text())["epochs_done"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--criterion", "largest"], "unknown criterion 'largest'"),
        (["--dataset", "imagefolder", "--data-dir", "/does/not/exist"], "/does/not/exist does not exist"),
        (["--set", "batch_size=100000"], "100000"),
        (["--set", "space=nasnet"], "unknown search space 'nasnet'"),
        (["--resume", "/no/such/run"], "no checkpoint at /no/such/run"),
    ],
)
def test_search_bad_input_is_one_line_exit_2(tmp_path, args, message):
    base = ["search", "--quiet", "--out", str(tmp_path / "x")]
    sets = [] if "--preset" in args or "--resume" in args else _sets()
    result = runner.invoke(app, [*base, *sets, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0, result.output


def test_nb201_lookup(nb201_csv):
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    result = runner.invoke(app, ["nb201", "lookup", arch, "--table", str(nb201_csv)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cifar10_test"] == pytest.approx(94.3633)
    bad = runner.invoke(app, ["nb201", "lookup", "|conv~0|", "--table", str(nb201_csv)])
    assert bad.exit_code == 2


def test_launch_hands_its_flags_to_the_spec_builder_as_one_settings_object(monkeypatch):
    seen = []

    def build_spec(options):
        seen.append(options)
        raise LaunchError("stopped before Ray")

    monkeypatch.setattr(launch_command, "build_spec", build_spec)
    args = ["--seeds", "3,7", "--dataset", "digits", "--set", "epochs=2", "--patience", "0", "--no-seed-stop"]
    result = runner.invoke(app, ["launch", *args, "--cpus-per-trial", "2", "--name", "x", "--address", "auto"])
    assert result.exit_code == 2 and "stopped before Ray" in result.output, result.output
    assert seen == [
        LaunchOptions(
            seeds="3,7",
            data=DataOptions(dataset="digits", set_=["epochs=2"]),
            stop=StopOptions(patience=0, seed_stop=False),
            cluster=ClusterOptions(address="auto", name="x", cpus_per_trial=2.0),
        )
    ]


def test_the_command_line_starts_without_mlflow_or_ray():
    """Each start builds every command's options from the settings classes (retrain's among them): that must
    not import MLflow or Ray, so `--help` and the one-line input errors stay fast."""
    code = (
        "import sys, typer.main; from ostr_ray.cli import app; typer.main.get_command(app); "
        "print(sorted(m for m in ('mlflow', 'ray') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stderr
