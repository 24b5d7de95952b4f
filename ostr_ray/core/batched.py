"""A seed group: K seeds of one search run as one batched model, each keeping its own search.

Every seed is a :class:`~.search.Searcher` of its own (its data streams, supernet, optimisers, strength
accumulator, trackers, history, checkpoints, callbacks), built or resumed exactly as a seed run alone; the
group only replaces the steps of an epoch by the batched step of a :class:`~.seed_stack.SeedStack` over
them, then writes each seed's slice back and lets the seed finish its epoch with its own code
(``Searcher.end_epoch``: divergence check, selection with every criterion, Algorithm 1, checkpoint,
``on_epoch_end``). So a seed's reports, checkpoints and result have the form of the same seed run alone, its
numbers agree with it to float rounding (the batched convolutions sum in another order), hence its genotypes
too unless its run meets a point where the loss is not differentiable, where a seed alone parts from itself
at another thread count just as much (tests/test_batched.py); and a seed's checkpoint resumes alone or in any
group. A report's ``epoch_seconds`` is the group's epoch, so its ``images_per_s`` is the seed's share: the
group's throughput is the sum over its seeds.

Seeds leave the group instead of being masked: a seed that diverges (non-finite loss or gradient) fails
alone, with the :class:`~.search.SearchError` it would raise alone recorded as a :class:`SeedFailure`; a seed
that Algorithm 1 stops, finishes. The stack is then rebuilt from the seeds left (with ``compile`` on, a rebuilt
stack compiles again). Masking would keep paying for the finished seed's slice in every kernel, and would
need per-seed Adam step counts and schedules.
Seeds resumed at different epochs (a kill between two seeds' checkpoint writes) are brought level the same
way: the group steps the seeds at the lowest epoch until the others are reached, then all together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ostr_ray.core.checkpoint import CHECKPOINT_NAME, rng_state, set_rng_state
from ostr_ray.core.config import ConfigError, SearchConfig, config_from_dict
from ostr_ray.core.events import EpochReport, SearchResult, call
from ostr_ray.core.schedule import val_batches, warm_up
from ostr_ray.core.search import Searcher, SearchError
from ostr_ray.core.seed_stack import SeedStack, stack_batches

__all__ = ["GroupResult", "SeedFailure", "SeedGroupSearcher", "check_group"]


@dataclass
class SeedFailure:
    """A seed of a group that could not go on; the others did."""

    seed: int
    epoch: int
    """The epoch that failed (1-based); the seed's checkpoints up to the one before are kept."""
    error: str
    """The message of the :class:`SearchError` the seed alone would have raised."""


@dataclass
class GroupResult:
    """How each seed of a group ended: a :class:`SearchResult` per finished seed, a failure per failed one."""

    results: dict[int, SearchResult] = field(default_factory=dict)
    failures: dict[int, SeedFailure] = field(default_factory=dict)


def check_group(configs: Sequence[SearchConfig]) -> None:
    """A group is one search at several seeds: every setting but ``seed`` equal, seeds distinct, and an
    architecture step the batched step implements (first order or single level) when it holds several."""
    if not configs:
        raise ConfigError("a seed group needs at least one seed")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"the seeds of a group must differ, got {seeds}")
    first = {k: v for k, v in configs[0].to_dict().items() if k != "seed"}
    for config in configs[1:]:
        differing = sorted(k for k, v in config.to_dict().items() if k != "seed" and first[k] != v)
        if differing:
            raise ConfigError(
                f"the seeds of a group must share every setting but seed; seed {config.seed} differs in "
                f"{', '.join(differing)}"
            )
    if configs[0].order == "second" and len(configs) > 1:
        raise ConfigError(
            f"order 'second' cannot run {len(configs)} seeds in one group: DARTS' unrolled step (a virtual SGD step "
            "and a finite-difference Hessian-vector product) is implemented per seed only; use groups of one seed "
            "(--seeds-per-trial 1) or order first / single"
        )


class SeedGroupSearcher:
    """Runs the seeds ``configs`` (one search, differing only in ``seed``) as one batched model.

    ``out_dirs``: one folder per seed for its checkpoints (None: none kept). ``callbacks`` are every seed's;
    ``seed_callbacks`` (seed -> callbacks) a seed's own. Each seed's callbacks get its ``on_epoch_end(report,
    checkpoint_path)`` and ``on_search_end(result)`` as from a seed run alone (``report.seed`` names it), and
    ``on_search_failed(failure)`` if it diverges. ``resume``: seeds whose folder holds a checkpoint continue
    from it (the others start afresh; a seed resumed after its last epoch finishes here, its ``on_search_end``
    with it); a checkpoint of another search is a ``CheckpointError``.
    """

    def __init__(
        self,
        configs: Sequence[SearchConfig],
        *,
        out_dirs: Sequence[str | Path | None] | None = None,
        callbacks: Iterable[Any] = (),
        seed_callbacks: Mapping[int, Iterable[Any]] | None = None,
        resume: bool = False,
    ) -> None:
        check_group(configs)
        out_dirs = list(out_dirs) if out_dirs is not None else [None] * len(configs)
        if len(out_dirs) != len(configs):
            raise ConfigError(f"{len(configs)} seeds but {len(out_dirs)} out_dirs")
        shared, own = list(callbacks), seed_callbacks or {}
        self.members: list[Searcher] = []
        self._rng: dict[int, dict[str, Any]] = {}
        for config, out_dir in zip(configs, out_dirs):
            member = _open(config, out_dir, [*shared, *own.get(config.seed, ())], resume)
            # A step draws nothing from the global generators (data draws use their own, seeded by seed and
            # epoch), so the state a seed's construction or resume left is what its checkpoints carry.
            self._rng[config.seed] = rng_state()
            self.members.append(member)
        lengths = {(len(m.data.train), len(m.data.val)) for m in self.members}
        if len(lengths) > 1:
            raise ConfigError(f"the seeds' data splits differ in batches per epoch: {sorted(lengths)}")
        self.result = GroupResult()
        self._stack: SeedStack | None = None
        self._stacked: list[Searcher] = []
        for member in self.members:
            if member.done:  # resumed after its last epoch
                self.result.results[member.config.seed] = member.finish()

    @classmethod
    def from_seeds(cls, config: SearchConfig, seeds: Sequence[int], **kwargs: Any) -> SeedGroupSearcher:
        """The group of ``config`` at each of ``seeds``."""
        return cls([config_from_dict({**config.to_dict(), "seed": seed}) for seed in seeds], **kwargs)

    @property
    def active(self) -> list[Searcher]:
        """The seeds still searching."""
        ended = self.result.results.keys() | self.result.failures.keys()
        return [m for m in self.members if m.config.seed not in ended]

    # ------------------------------------------------------------------ the loop
    def run(self) -> GroupResult:
        """Run epochs until every seed has finished or failed."""
        while self.active:
            self.run_epoch()
        return self.result

    def run_epoch(self) -> list[EpochReport]:
        """One epoch of the active seeds at the lowest epoch; their reports (failed seeds have none)."""
        lowest = min(m.epoch for m in self.active)
        cohort = [m for m in self.active if m.epoch == lowest]
        if cohort[0].config.order == "second":  # check_group allows it for one seed: its own loop runs it
            return self._end_epochs(cohort, lambda _, member: member.run_epoch())
        stack = self._stack_of(cohort)
        config, epoch = cohort[0].config, lowest
        arch_active = epoch >= config.arch_start_epoch
        stack.accumulator.reset()
        totals = torch.zeros(len(cohort), 6, dtype=torch.float64, device=stack.device)
        finite: list[torch.Tensor] = []
        started = time.perf_counter()
        steps = len(cohort[0].data.train)
        streams = [zip(m.data.train.epoch(epoch), val_batches(m.data.val, epoch, steps)) for m in cohort]
        with warm_up(stack.w_opt, epoch, config.w_lr_warmup_epochs):
            lrs = (stack.w_opt.param_groups[0]["lr"], stack.a_opt.param_groups[0]["lr"])
            for pairs in zip(*streams):
                train, val = zip(*pairs)
                step_totals, step_finite = stack.train_step(
                    stack_batches(train), stack_batches(val), arch_active=arch_active
                )
                totals += step_totals
                finite.append(step_finite)
        seconds = time.perf_counter() - started
        stack.scheduler.step()
        stack.write_back(cohort)
        per_seed, flags = totals.tolist(), torch.stack(finite)
        return self._end_epochs(
            cohort, lambda k, member: member.end_epoch(arch_active, per_seed[k], lrs, seconds, list(flags[:, k]))
        )

    def _end_epochs(
        self, cohort: list[Searcher], end_epoch: Callable[[int, Searcher], EpochReport]
    ) -> list[EpochReport]:
        """Each seed ends its epoch with its own code, under its own RNG state; failures and finishes leave."""
        reports = []
        for index, member in enumerate(cohort):
            seed = member.config.seed
            with self._rng_of(seed):
                try:
                    reports.append(end_epoch(index, member))
                except SearchError as error:
                    failure = SeedFailure(seed, member.epoch + 1, str(error))
                    self.result.failures[seed] = failure
                    call(member.callbacks, "on_search_failed", failure)
                    continue
            if member.done:
                self.result.results[seed] = member.finish()
        return reports

    def _stack_of(self, cohort: list[Searcher]) -> SeedStack:
        """The stack of ``cohort``, rebuilt from the seeds' own state when the cohort changed."""
        if (
            self._stack is None
            or len(cohort) != len(self._stacked)
            or any(a is not b for a, b in zip(cohort, self._stacked))
        ):
            self._stack, self._stacked = None, []  # free the old stack before building the new one
            self._stack, self._stacked = SeedStack(cohort), list(cohort)
        return self._stack

    @contextlib.contextmanager
    def _rng_of(self, seed: int) -> Iterator[None]:
        set_rng_state(self._rng[seed])
        try:
            yield
        finally:
            self._rng[seed] = rng_state()


def _open(config: SearchConfig, out_dir: str | Path | None, callbacks: list[Any], resume: bool) -> Searcher:
    if resume and out_dir is not None and (Path(out_dir) / CHECKPOINT_NAME).is_file():
        return Searcher.resume(out_dir, config=config, out_dir=out_dir, callbacks=callbacks)
    return Searcher(config, out_dir=out_dir, callbacks=callbacks)
