"""``ostr-ray retrain``: train a found architecture from scratch on Ray Train, recorded in MLflow.

What happens, in order (and where)
----------------------------------
1. :mod:`~ostr_ray.retrain.genotypes`: :func:`resolve_genotype` turns the GENOTYPE argument (a genotype string
   or JSON, a JSON file, a launch or search directory, or an MLflow run id) into ``(space, genotype, source)``.
2. :mod:`~ostr_ray.retrain.protocols`: :func:`build_retrain_config` reads the training protocol (data,
   ``launch/protocols/*.yaml``) and applies ``--augment``, ``--set`` and ``--epochs`` on top.
3. :mod:`~ostr_ray.retrain.spec`: :func:`prepare_retrain` checks everything that can be checked without Ray (data
   tree, batch split, model size against the protocol's mobile limit) and measures the network
   (:mod:`~ostr_ray.retrain.network`: parameters and multiply-adds, see :func:`measure_network` for the
   convention). ``--dry-run`` stops here.
4. :mod:`~ostr_ray.retrain.driver`: :func:`run_retrain` joins Ray and checks the cluster can host the workers
   (the launch's own helper, :mod:`ostr_ray.orchestration.cluster`), opens the
   MLflow run (:mod:`~ostr_ray.retrain.mlflow_run`, driver side: no tracking credentials are needed on the
   workers), and fits a ``TorchTrainer`` whose workers run :func:`train_loop_per_worker`
   (:mod:`~ostr_ray.retrain.worker`): DDP through ``ray.train.torch.prepare_model``, one checkpoint per epoch,
   automatic restarts from the latest checkpoint (``FailureConfig``). The per-epoch history travels inside the
   checkpoints, so after ``fit`` the driver logs every epoch's metrics to the run, including epochs trained
   before a worker failure or before a ``--resume`` (:func:`resume_retrain`). The run directory's files are
   named in :class:`ostr_ray.experiment.RetrainDir`.

Layering: protocols, options, mlflow_run, genotypes, network, spec, worker, driver; each module imports only
siblings listed before it, directly (never this package), and Ray and MLflow lazily, inside the functions that need
them. :mod:`~ostr_ray.retrain.options` holds :class:`RetrainOptions`, what the user asks (the CLI's flags are
declared there, once).
"""

import importlib
from typing import Any

_EXPORTS = {
    "protocols": (
        "AUGMENTS",
        "SCHEDULES",
        "RetrainConfig",
        "RetrainError",
        "build_retrain_config",
        "config_from_dict",
        "effective_lr",
        "list_protocols",
        "load_protocol",
        "lr_factor",
        "parse_set",
        "protocol_dir",
    ),
    "options": ("RetrainOptions", "RetrainPlacement", "RetrainRecipe", "RetrainSource"),
    "mlflow_run": ("DEFAULT_EXPERIMENT", "tracking_uri_for"),
    "genotypes": ("MLFLOW_RUN_ID", "decode_genotype", "resolve_genotype"),
    "network": ("FLOPS_CONVENTION", "build_network", "measure_network"),
    "spec": (
        "DATASETS",
        "SPEC_FILE",
        "DataInfo",
        "RetrainSpec",
        "check_data",
        "default_protocol",
        "load_spec",
        "prepare_retrain",
    ),
    "worker": ("make_optimizer", "shard_stream", "train_loop_per_worker", "train_step"),
    "driver": ("read_history", "resume_retrain", "run_retrain"),
}
"""Module -> the names this package exports from it, imported on first use (PEP 562): the CLI builds its options
from :mod:`.options` on every start, and importing the driver or the genotype lookup would pull in MLflow."""
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
