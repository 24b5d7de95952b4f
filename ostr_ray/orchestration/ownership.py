"""One driver per launch directory: an OS file lock held for the driver's whole life, and a heartbeat.

Two ``ostr-ray launch`` processes on one ``--storage/--name`` would run into the same trial directories and
race on the same MLflow store, so the second one is refused with the holder's PID and host. The lock is a
``filelock`` (``flock``) on ``<launch>/.driver.lock``: the kernel releases it when the holder dies however it
dies, so a crashed or killed driver never blocks ``--resume``. Beside it, ``driver.json`` (host, PID, a
heartbeat refreshed every :data:`HEARTBEAT_S` seconds, ``ended_at`` when the driver lets go) tells
``ostr-ray status`` whether a launch is live, also from another machine that shares the storage.

Remote storage (s3://...) cannot be locked this way; there the launch runs without the guard.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from filelock import FileLock, Timeout

from ostr_ray.experiment import LaunchDir, LaunchDirError
from ostr_ray.experiment.records import DriverRecord
from ostr_ray.experiment.storage import StorageError
from ostr_ray.orchestration.spec import LaunchError

HEARTBEAT_S = 5.0
STALE_AFTER_S = 4 * HEARTBEAT_S
"""A heartbeat older than this means the driver is gone (it died without stamping ``ended_at``)."""


class DriverLock:
    """Hold a launch directory for this process: ``with DriverLock(launch): ...``."""

    def __init__(self, launch: LaunchDir, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.launch = launch
        self.heartbeat_s = heartbeat_s
        self._lock: FileLock | None = None
        self._record: DriverRecord | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        if self.launch.is_remote:
            return
        self.launch.lock_path().parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.launch.lock_path()), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise LaunchError(f"{self.launch.path} is driven by another process ({holder(self.launch)})") from None
        self._lock = lock
        now = time.time()
        self._record = DriverRecord(socket.gethostname(), os.getpid(), now, now)
        self.launch.write_driver(self._record)
        self._beat = threading.Thread(target=self._heartbeat, name="ostr-ray-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._record.heartbeat_at = time.time()
            try:
                self.launch.write_driver(self._record)
            except (OSError, StorageError):  # a full or unreachable disk must not kill the driver (status: stale)
                continue

    def release(self) -> None:
        if self._lock is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._record.ended_at = self._record.heartbeat_at = time.time()
        self.launch.write_driver(self._record)
        self._lock.release()
        self._lock = None


def holder(launch: LaunchDir) -> str:
    """Who holds the launch, in words (for the refusal message)."""
    try:
        record = launch.read_driver()
    except LaunchDirError:
        record = None
    if record is None:
        return "its driver record is missing"
    age = time.time() - record.heartbeat_at
    return f"PID {record.pid} on host {record.host}, started {time.ctime(record.started_at)}, heartbeat {age:.0f} s ago"


def driver_alive(record: DriverRecord | None, now: float | None = None) -> bool:
    """Whether the driver that wrote ``record`` still runs: not ended, heartbeat fresh, and (on this host)
    its process exists."""
    if record is None or record.ended_at is not None:
        return False
    if (now or time.time()) - record.heartbeat_at > STALE_AFTER_S:
        return False
    if record.host == socket.gethostname():
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True
