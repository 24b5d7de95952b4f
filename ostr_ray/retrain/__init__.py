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
   before a worker failure or before a ``--resume`` (:func:`resume_retrain`).

Layering: protocols, mlflow_run, genotypes, network, spec, worker, driver; each module imports only siblings
listed before it, directly (never this package), and Ray and MLflow lazily, inside the functions that need them.
"""

from ostr_ray.retrain.driver import read_history, resume_retrain, run_retrain
from ostr_ray.retrain.genotypes import MLFLOW_RUN_ID, decode_genotype, resolve_genotype
from ostr_ray.retrain.mlflow_run import DEFAULT_EXPERIMENT, tracking_uri_for
from ostr_ray.retrain.network import FLOPS_CONVENTION, build_network, measure_network
from ostr_ray.retrain.protocols import (
    AUGMENTS,
    SCHEDULES,
    RetrainConfig,
    RetrainError,
    build_retrain_config,
    config_from_dict,
    effective_lr,
    list_protocols,
    load_protocol,
    lr_factor,
    parse_set,
    protocol_dir,
)
from ostr_ray.retrain.spec import (
    DATASETS,
    SPEC_FILE,
    DataInfo,
    RetrainOptions,
    RetrainSpec,
    check_data,
    default_protocol,
    load_spec,
    prepare_retrain,
)
from ostr_ray.retrain.worker import (
    HISTORY_FILE,
    STATE_FILE,
    make_optimizer,
    shard_stream,
    train_loop_per_worker,
    train_step,
)

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "DEFAULT_EXPERIMENT",
    "FLOPS_CONVENTION",
    "HISTORY_FILE",
    "MLFLOW_RUN_ID",
    "SCHEDULES",
    "SPEC_FILE",
    "STATE_FILE",
    "DataInfo",
    "RetrainConfig",
    "RetrainError",
    "RetrainOptions",
    "RetrainSpec",
    "default_protocol",
    "build_network",
    "build_retrain_config",
    "check_data",
    "config_from_dict",
    "decode_genotype",
    "effective_lr",
    "list_protocols",
    "load_protocol",
    "load_spec",
    "lr_factor",
    "make_optimizer",
    "measure_network",
    "parse_set",
    "prepare_retrain",
    "protocol_dir",
    "read_history",
    "resolve_genotype",
    "resume_retrain",
    "shard_stream",
    "run_retrain",
    "tracking_uri_for",
    "train_loop_per_worker",
    "train_step",
]
