"""Command-line options grouped into small dataclasses, shared by the commands that take them.

Typer reads a command's options from its signature. :func:`with_options` builds that signature from option
groups (dataclasses whose fields are ``Annotated[type, typer.Option(...)]`` with defaults), and calls the
command with the filled-in groups, so a command's body works with a handful of named objects instead of two
dozen parameters, and an option shared by ``search``, ``launch`` and ``retrain`` is declared once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any setting as key=value (YAML value).")]


def with_options(*groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``fn(*group_objects, **own_params)``: each group's fields become options."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[len(groups) :]
        grouped = []
        for group in groups:
            hints = typing.get_type_hints(group, include_extras=True)
            for field in dataclasses.fields(group):
                default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
                grouped.append(
                    inspect.Parameter(
                        field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints[field.name]
                    )
                )

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            objects = [group(**{f.name: values.pop(f.name) for f in dataclasses.fields(group)}) for group in groups]
            return fn(*objects, **values)

        command.__signature__ = inspect.Signature([*own, *grouped])  # type: ignore[attr-defined]
        return command

    return decorate


def _str(help_text: str, *decls: str) -> Any:
    return Annotated[str | None, typer.Option(*decls, help=help_text)]


@dataclass
class DataOptions:
    """What data a search reads (overrides the preset's)."""

    dataset: _str("cifar10, cifar100, imagenet (streamed tree), imagefolder, digits, synthetic.") = None
    data_dir: _str("Data root (class-folder tree for imagefolder).") = None
    download: Annotated[bool, typer.Option(help="Download torchvision data sets when missing.")] = False
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None
    nb201_table: _str("NB201 ground-truth table (CSV or NATS) for every epoch.") = None
    set_: SetOpt = None

    def overrides(self, **more: Any) -> dict[str, Any]:
        """The settings these options override (``--set`` first, then the named flags)."""
        from ostr_ray.core.config import parse_override

        values = dict(parse_override(s) for s in self.set_ or [])
        flags = dict(
            dataset=self.dataset,
            data_dir=self.data_dir,
            download=self.download or None,
            epochs=self.epochs,
            nb201_table=self.nb201_table,
            **more,
        )
        values.update({k: v for k, v in flags.items() if v is not None})
        return values


@dataclass
class StopOptions:
    """Algorithm 1 per seed and the consensus stop of a launch."""

    criterion: _str("Criterion the stability rules watch (default: the preset's).") = None
    patience: Annotated[int | None, typer.Option(help="C: epochs a genotype must hold (0 = run all).")] = None
    agreement: Annotated[float, typer.Option(help="Share of seeds that must agree to stop the launch.")] = 0.8
    seed_stop: Annotated[bool, typer.Option(help="Per-seed Algorithm 1.")] = True
    experiment_stop: Annotated[bool, typer.Option(help="Stop all once the consensus held.")] = True


@dataclass
class ClusterOptions:
    """Where a launch runs and records."""

    address: _str("Join a running Ray cluster ('auto'); else start one.") = None
    storage: _str("Experiment storage: a path or s3://... URI.") = None
    name: _str("Experiment name (a folder under --storage).") = None
    tracking_uri: _str("MLflow tracking URI.") = None
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial (also torch's threads).")] = 1.0
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per trial; 0.25 packs four seeds per GPU.")] = 0.0
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial from its last checkpoint.")] = 2
    seeds_per_trial: Annotated[
        int, typer.Option(help="Seeds searched as one batched model per trial (one kernel serves them all).")
    ] = 1


@dataclass
class OutputOptions:
    quiet: Annotated[bool, typer.Option(help="Plain log lines instead of live tables and progress bars.")] = False
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False


@dataclass
class RetrainSource:
    """Which genotype to retrain when GENOTYPE is a launch, a search or an MLflow run."""

    criterion: _str("Which criterion's genotype to take from a search.") = None
    seed: Annotated[int | None, typer.Option(help="Take this search seed's genotype instead of the consensus.")] = None
    variant: _str("Launch variant, when the launch has several.") = None


@dataclass
class RetrainRecipe:
    """How to train it."""

    dataset: Annotated[
        str, typer.Option(help="cifar10, cifar100, imagenet (streamed tree), imagefolder, digits, synthetic.")
    ] = "cifar10"
    data_dir: _str("Data root; class-folder tree: train/ and test|val/.") = None
    protocol: _str("darts-cifar, darts-imagenet, nb201 or a YAML; default from the space.") = None
    augment: _str("'randaugment' adds RandAugment and doubles the epochs.") = None
    epochs: Annotated[int | None, typer.Option(help="Override the protocol's epochs.")] = None
    allow_large: Annotated[bool, typer.Option(help="Lift the protocol's mobile-setting size limit.")] = False
    download: Annotated[bool, typer.Option(help="Download torchvision data sets when missing.")] = False
    set_: SetOpt = None


@dataclass
class RetrainPlacement:
    """Where and how wide it trains, and where it records."""

    workers: Annotated[int | None, typer.Option(help="DDP workers (Ray Train). [default: 1]")] = None
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per worker. [default: 1]")] = None
    gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per worker, 0 or 1. [default: 0]")] = None
    max_failures: Annotated[int, typer.Option(help="Worker-group restarts from the last checkpoint.")] = 2
    address: _str("Join a running Ray cluster ('auto'); else start one.") = None
    storage: _str("Where run dirs (checkpoints) go. [default: ostr_runs]") = None
    name: _str("Run name (a folder under --storage).") = None
    tracking_uri: _str("MLflow tracking URI.") = None
    resume: _str("Continue the retrain in this run dir.") = None
