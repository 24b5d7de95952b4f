"""What a user asks of ``ostr-ray retrain``: the settings, declared once, that the CLI fills from its flags (help
text as field metadata, see :func:`ostr_ray.core.fieldtypes.option`) and :func:`~ostr_ray.retrain.spec.prepare_retrain`
resolves and checks.

Kept apart from :mod:`~ostr_ray.retrain.spec` because the CLI builds its options from these classes on every start:
this module imports neither MLflow nor Ray (the spec's genotype lookup reads MLflow runs), so ``ostr-ray --help``
and the one-line input errors stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ostr_ray.core.fieldtypes import option
from ostr_ray.experiment.layout import DEFAULT_STORAGE
from ostr_ray.retrain.protocols import parse_set


@dataclass
class RetrainSource:
    """Which genotype to retrain when GENOTYPE is a launch, a search or an MLflow run."""

    criterion: str | None = option(None, "Which criterion's genotype to take from a search.")
    seed: int | None = option(None, "Take this search seed's genotype instead of the consensus.")
    variant: str | None = option(None, "Launch variant, when the launch has several.")


@dataclass
class RetrainRecipe:
    """How to train it."""

    dataset: str = option("cifar10", "cifar10, cifar100, imagenet (streamed tree), imagefolder, digits, synthetic.")
    data_dir: str | None = option(None, "Data root; class-folder tree: train/ and test|val/.")
    protocol: str | None = option(None, "darts-cifar, darts-imagenet, nb201 or a YAML; default from the space.")
    """A protocol in launch/protocols or a YAML path; default: the space's own for the data set."""
    augment: str | None = option(None, "'randaugment' adds RandAugment and doubles the epochs.")
    epochs: int | None = option(None, "Override the protocol's epochs.")
    allow_large: bool = option(False, "Lift the protocol's mobile-setting size limit.")
    download: bool = option(False, "Download torchvision data sets when missing.")
    set_: list[str] | None = option(None, "Any setting as key=value (YAML value).", "--set")

    def overrides(self) -> dict[str, Any]:
        """The protocol settings these options override (``--set``, and ``download`` when asked for)."""
        return {**parse_set(self.set_), **({"download": True} if self.download else {})}


@dataclass
class RetrainPlacement:
    """Where and how wide it trains, and where it records.

    The resources are None when not given: a new run takes the defaults (:meth:`resources`), ``--resume`` keeps
    the run's own."""

    workers: int | None = option(None, "DDP workers (Ray Train). [default: 1]")
    cpus_per_worker: float | None = option(None, "CPUs per worker. [default: 1]")
    gpus_per_worker: float | None = option(None, "GPUs per worker, 0 or 1. [default: 0]")
    max_failures: int = option(2, "Worker-group restarts from the last checkpoint.")
    address: str | None = option(None, "Join a running Ray cluster ('auto'); else start one.")
    storage: str | None = option(None, f"Where run dirs (checkpoints) go. [default: {DEFAULT_STORAGE}]")
    name: str | None = option(None, "Run name (a folder under --storage).")
    tracking_uri: str | None = option(None, "MLflow tracking URI.")
    resume: str | None = option(None, "Continue the retrain in this run dir.")

    def resources(self) -> tuple[int, float, float]:
        """(workers, CPUs per worker, GPUs per worker) of a new run: 1, 1 and 0 where not given."""
        return (
            1 if self.workers is None else self.workers,
            1.0 if self.cpus_per_worker is None else self.cpus_per_worker,
            0.0 if self.gpus_per_worker is None else self.gpus_per_worker,
        )


@dataclass
class RetrainOptions:
    """Everything ``ostr-ray retrain`` is asked (see its ``--help``), as the command line fills it."""

    genotype: str | None = option(
        None,
        "Genotype string/JSON, a JSON file, a launch or search dir, or an MLflow run id (not with --resume).",
        argument=True,
    )
    dry_run: bool = option(False, "Print the network's size and settings; train nothing.")
    source: RetrainSource = field(default_factory=RetrainSource)
    recipe: RetrainRecipe = field(default_factory=RetrainRecipe)
    placement: RetrainPlacement = field(default_factory=RetrainPlacement)
