"""The scale-out path with the cloud taken out: a head and a worker started with `ray start` on loopback,
and `ostr-ray launch --address` running a 2-seed tiny search across them with storage on a shared path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocess launches and benchmarks

SCRIPT = REPO / "scripts" / "local_multinode.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_launch_against_a_two_node_local_cluster(tmp_path):
    storage = tmp_path / "shared"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(storage)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BIN": str(Path(sys.executable).parent)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "alive Ray nodes: 2" in result.stdout
    report = json.loads((storage / "launch_out.json").read_text())
    assert {s["status"] for s in report["variants"]["demo"]["seeds"].values()} == {"finished"}
    assert (storage / "multinode" / "report.json").is_file()
