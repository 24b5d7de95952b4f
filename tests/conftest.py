"""Shared fixtures: tiny configs on synthetic data, and where the offline shared data lives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
NB201_CSV = SHARED / "nb201" / "nb201_cifar10.csv"
CIFAR10_DIR = SHARED / "cifar10"


SLOW_FIXTURES = {"local_ray"}
"""Tests that use these start Ray: they are ``slow`` without saying so themselves."""


def pytest_collection_modifyitems(config, items):
    """``make test-fast`` (``-m "not slow"``) leaves out every test that starts Ray or a subprocess cluster."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded: deterministic and fair to the other tests on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_overrides(**extra):
    """A seconds-long NB201 search on synthetic 8x8 data."""
    values = dict(
        space="nb201",
        space_kwargs={"C": 4, "N": 1},
        dataset="synthetic",
        image_size=8,
        train_size=64,
        val_size=64,
        batch_size=16,
        epochs=3,
        a_lr=3e-2,
        crop_padding=1,
        threads=1,
    )
    values.update(extra)
    return values


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray for one test module (tiny launches and Ray Train runs)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def nb201_csv() -> Path:
    if not NB201_CSV.is_file():
        pytest.skip(f"shared NB201 table not found at {NB201_CSV} (only on project machines)")
    return NB201_CSV


def make_report(epoch, seed, genotypes, scores, *, space="nb201", betas=None, **fields):
    """A hand-made EpochReport: ``scores`` (cell -> (E, O)) stand for every strength score, beta is uniform
    unless given, and the fields no statistic reads get plain values (override any with ``fields``)."""
    import numpy as np

    from ostr_ray.core.events import EpochReport
    from ostr_ray.core.strength import SCORE_NAMES

    values = dict(
        epoch=epoch,
        epochs=10,
        seed=seed,
        space=space,
        train_loss=1.0,
        train_acc=0.5,
        val_loss=1.0,
        val_acc=0.5,
        w_lr=0.025,
        a_lr=3e-4,
        arch_active=bool(genotypes),
        alphas={c: np.zeros_like(m) for c, m in scores.items()},
        betas=betas or {c: np.full_like(m, 1.0 / m.shape[1]) for c, m in scores.items()},
        scores={name: dict(scores) for name in SCORE_NAMES},
        stderr={name: {c: np.zeros_like(m) for c, m in scores.items()} for name in SCORE_NAMES},
        genotypes=genotypes,
        changed={c: False for c in genotypes},
        stable_for={c: 0 for c in genotypes},
        decisiveness={},
        epoch_seconds=1.0,
        images_per_s=10.0,
    )
    values.update(fields)
    return EpochReport(**values)


def as_set(values):
    """A settings mapping as ``--set key=value`` texts (JSON values are YAML), as a user would give it."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def tiny_spec(tmp_path, name, seeds="3", tracking_uri=None, **extra):
    """A launch spec of the demo preset shrunk to seconds (``tiny_overrides``), stored under ``tmp_path``.

    ``extra`` names launch settings (``patience``, ``max_failures``...) or search settings over the tiny ones."""
    import dataclasses

    from ostr_ray.orchestration.spec import ClusterOptions, DataOptions, LaunchOptions, StopOptions, build_spec

    def take(group):
        return {k: extra.pop(k) for k in [f.name for f in dataclasses.fields(group)] if k in extra}

    stop = StopOptions(**take(StopOptions))
    cluster = ClusterOptions(storage=str(tmp_path), name=name, tracking_uri=tracking_uri, **take(ClusterOptions))
    data = DataOptions(set_=as_set(tiny_overrides(**extra)))
    return build_spec(LaunchOptions(preset="demo", seeds=seeds, data=data, stop=stop, cluster=cluster))


# ---------------------------------------------------------------------------------------------- object storage
def free_port() -> int:
    """A TCP port nothing listens on right now (for a server this test starts, or an endpoint that is down)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


S3_BUCKET = "ostr-test"
S3_READ_ONLY = "readonly"
"""The prefix of the bucket the test credentials may read but not write (an IAM policy denies it)."""


class S3Server:
    """A real S3-compatible HTTP server (moto) on loopback, reached the standard AWS way: :attr:`env` holds the
    ``AWS_*`` variables that pyarrow, Ray, MLflow and boto3 read (give it to a subprocess, or monkeypatch it)."""

    def __init__(self, endpoint: str, key: str, secret: str) -> None:
        self.endpoint, self.bucket = endpoint, S3_BUCKET
        self.env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, service: str = "s3"):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        ).client(service, endpoint_url=self.endpoint)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the test bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


S3_SETUP_CALLS = 4
"""Requests moto serves before it checks credentials: the bucket, the user, its policy and its access key."""


@pytest.fixture(scope="module")
def s3_server():
    """``python -m moto.server`` on a free loopback port, credentials checked (IAM), one bucket, and a user whose
    keys may do anything in it except write under ``readonly/``. A server in its own process, not a mock."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(S3_SETUP_CALLS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while True:  # a bare TCP connect: an HTTP request would spend one of the unauthenticated calls
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"moto server did not start on port {port} (exit {server.poll()})")
                time.sleep(0.2)
        yield _s3_user(S3Server(f"http://127.0.0.1:{port}", "admin", "admin"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _s3_user(admin: S3Server) -> S3Server:
    """The bucket, and the keys of a user that may not write under its ``readonly/`` prefix."""
    admin.client().create_bucket(Bucket=S3_BUCKET)
    iam = admin.client("iam")
    iam.create_user(UserName="ostr")
    deny = f"arn:aws:s3:::{S3_BUCKET}/{S3_READ_ONLY}/*"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": deny},
        ],
    }
    iam.put_user_policy(UserName="ostr", PolicyName="bucket", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="ostr")["AccessKey"]
    return S3Server(admin.endpoint, key["AccessKeyId"], key["SecretAccessKey"])
