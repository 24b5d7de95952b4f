"""Everything a launch can check before Ray starts, so bad input costs one line and exit status 2.

Settings (types, ranges, finiteness) are checked when the configs are built (:mod:`ostr_ray.core.config`);
this stage adds what needs the machine: the launch directory (no second driver, no silent reuse of a
launch's name), the storage is writable, the NB201 tables load, the image trees decode, the trials are a sane
number, and each trial fits the node's memory (and reserves it, so Ray never packs more trials than fit).
``ostr-ray search`` and ``retrain`` call the parts that apply to them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ostr_ray.core.config import ConfigError, config_from_dict
from ostr_ray.experiment import LaunchDir, LaunchDirError, LaunchSpec
from ostr_ray.experiment.storage import StorageError, check_remote_writable, is_uri
from ostr_ray.orchestration.ownership import driver_alive, holder
from ostr_ray.orchestration.spec import LaunchError

MAX_TRIALS = 1000
"""Trials of one launch (seeds x variants): each is a Ray actor with its own checkpoints and MLflow run; a
launch beyond this is almost surely a typo (``--seeds 100000``), and Tune takes minutes just to expand it."""


def check_new_launch(launch: LaunchDir, *, overwrite: bool) -> None:
    """A new launch may not reuse a launch directory silently: one being driven is refused; a finished or
    unfinished one needs ``--overwrite`` (start over) or ``--resume`` (continue it)."""
    if launch.is_remote or not launch.exists() or not launch.is_launch():
        return
    if driver_alive(_driver(launch)):
        raise LaunchError(f"{launch.path} is being driven right now ({holder(launch)})")
    if not overwrite:
        report = _report(launch)
        state = f"already ended ({report.outcome})" if report and report.outcome != "interrupted" else "is unfinished"
        raise LaunchError(
            f"launch {launch.path} {state}; continue it with --resume {launch.path}, "
            "start it over with --overwrite, or choose another --name"
        )
    shutil.rmtree(launch.path)


def _driver(launch: LaunchDir) -> Any:
    try:
        return launch.read_driver()
    except LaunchDirError:
        return None


def _report(launch: LaunchDir) -> Any:
    try:
        return launch.read_report(required=False)
    except LaunchDirError:
        return None


def check_writable(path: str, what: str) -> None:
    """``path`` can be created and written: fail now, not after an epoch of training. Nothing is created: the
    check asks the nearest existing folder on the way (remote storage: see
    :func:`~ostr_ray.experiment.storage.check_remote_writable`)."""
    if is_uri(path):
        try:
            check_remote_writable(path)
        except StorageError as exc:
            raise LaunchError(f"cannot use {what} {path}: {exc}") from None
        return
    folder = Path(path).expanduser().resolve()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise LaunchError(f"cannot write to {what} {path}: {existing} is not a directory")
    try:  # a real write (root passes os.access checks on read-only and virtual file systems)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise LaunchError(f"cannot write to {what} {path}: {existing}: {exc.strerror or exc}") from None


def check_tracking(spec: LaunchSpec) -> None:
    """The MLflow store is named and, if a server, answers: before anything of the launch exists on disk or in
    storage (the launch's own SQLite store is created with its directory, later)."""
    from ostr_ray.tracking.store import check_tracking_uri, is_server, resolve_tracking_uri

    uri = resolve_tracking_uri(spec.tracking_uri, spec.experiment_path)
    if is_server(uri):
        check_tracking_uri(uri)


def check_tables(variants: dict[str, dict[str, Any]]) -> None:
    """Every variant's NB201 table loads (a corrupt one is one line here, not a failed trial per seed)."""
    from ostr_ray.core.nb201_bench import load_nb201_table

    for table in sorted({c["nb201_table"] for c in variants.values() if c.get("nb201_table")}):
        load_nb201_table(table)


def check_images(spec: LaunchSpec) -> None:
    """Every image file a trial will read decodes (once per distinct file set: seeds share one without a
    subset). For the in-memory path this also fills the decoded-image cache the trials then load."""
    from ostr_ray.core.search_data import check_searched_images

    seen = set()
    for values in spec.variants.values():
        for seed in spec.seeds:
            config = config_from_dict({**values, "seed": seed})
            key = (config.dataset, config.data_dir, config.image_size, config.subset_fraction, config.data_path)
            key += (seed,) if config.subset_fraction not in (None, 1.0) else ()
            if key not in seen:
                seen.add(key)
                check_searched_images(config)


def check_trials(spec: LaunchSpec) -> None:
    trials = len(spec.seeds) * len(spec.variants)
    if trials > MAX_TRIALS:
        raise LaunchError(
            f"{len(spec.seeds)} seeds x {len(spec.variants)} variants = {trials} trials; at most {MAX_TRIALS} "
            "per launch (split it into several launches)"
        )


def check_memory(spec: LaunchSpec, *, local: bool) -> None:
    """Estimate each variant's memory per trial (:mod:`ostr_ray.core.memory`); reserve it with Ray for CPU
    trials (``spec.extra["memory_bytes"]``) and, on a local cluster, refuse a trial this node cannot hold.

    GPU trials are not checked here: the driver's node may not have their GPU (nor one like it). Each GPU
    trial checks its own device before it reads any data, with
    :func:`ostr_ray.core.memory.check_device_memory`."""
    if spec.gpus_per_trial > 0:
        return
    import torch

    from ostr_ray.core.memory import available_memory, check_search_memory

    available = available_memory(torch.device("cpu")) if local else 1 << 62
    need = 0
    for variant, values in spec.variants.items():
        try:
            group = min(spec.seeds_per_trial, len(spec.seeds))  # a seed group holds that many supernets
            estimate = check_search_memory(config_from_dict({**values, "device": "cpu"}), available // group)
        except ConfigError as exc:
            raise ConfigError(f"{variant}: {exc}") from None
        need = max(need, estimate.total_bytes * min(spec.seeds_per_trial, len(spec.seeds)))
    spec.extra["memory_bytes"] = need


def preflight_launch(spec: LaunchSpec, *, local: bool, overwrite: bool) -> None:
    """All of the above for a new launch, in the order cheapest first. None creates anything (the remote
    storage probe deletes its file again), and the launch's folders are made only after all of them pass."""
    check_trials(spec)
    check_new_launch(LaunchDir(spec.experiment_path), overwrite=overwrite)
    check_tracking(spec)
    check_writable(spec.storage, "--storage")
    check_tables(spec.variants)
    check_memory(spec, local=local)
    check_images(spec)
