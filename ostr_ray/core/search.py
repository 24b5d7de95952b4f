"""The search loop of OStr-DARTS for K >= 1 seeds of one search: one seed is a group of one.

A seed group runs K seeds (one search, differing only in ``seed``) as one batched model. Every seed is a
:class:`~.seed.SeedSearch` of its own (its data streams, supernet, optimisers, strength accumulator, trackers,
history, checkpoints, callbacks), built or resumed exactly as a seed run alone; the loop runs the steps of an
epoch through one :class:`~.step.SearchStep` over them, then writes each seed's slice back and lets the seed
finish its epoch with its own code (``SeedSearch.end_epoch``: divergence check, selection with every criterion,
Algorithm 1, checkpoint, ``on_epoch_end``). An epoch is one pass over the weight-training half, as in DARTS
and PC-DARTS; the validation half is a stream that restarts when it ends (:func:`~.schedule.val_batches`).
The step keeps every number on the device and the host synchronises once per epoch.

So a seed's reports, checkpoints and result have one form alone or in a group, its numbers in a group agree
with it alone to float rounding (the batched convolutions sum in another order), hence its genotypes too
unless its run meets a point where the loss is not differentiable, where a seed alone parts from itself at
another thread count just as much (tests/test_seed_groups.py); and a seed's checkpoint resumes alone or in
any group. A report's ``epoch_seconds`` is the group's epoch, so its ``images_per_s`` is the seed's share: the
group's throughput is the sum over its seeds.

Seeds leave the group instead of being masked: a seed that diverges (non-finite loss or gradient) fails
alone, with the :class:`~.seed.SearchError` it would raise alone recorded as a :class:`SeedFailure`; a seed
that Algorithm 1 stops, finishes. The step is then rebuilt from the seeds left (with ``compile`` on, a rebuilt
step compiles again). Masking would keep paying for the finished seed's slice in every kernel, and would
need per-seed Adam step counts and schedules.
Seeds resumed at different epochs (a kill between two seeds' checkpoint writes) are brought level the same
way: the group steps the seeds at the lowest epoch until the others are reached, then all together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ostr_ray.core.checkpoint import CHECKPOINT_NAME, CheckpointError, read_checkpoint, rng_state, set_rng_state
from ostr_ray.core.config import ConfigError, SearchConfig, config_from_dict
from ostr_ray.core.events import EpochReport, SearchResult, call
from ostr_ray.core.schedule import val_batches, warm_up
from ostr_ray.core.seed import SearchError, SeedSearch
from ostr_ray.core.step import SearchStep, stack_batches

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "GroupResult",
    "SearchError",
    "SearchStep",
    "Searcher",
    "SeedFailure",
    "SeedGroupSearcher",
    "check_group",
    "read_checkpoint",
]


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
    """A group is one search at several seeds: every setting but ``seed`` equal, seeds distinct."""
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


class SeedGroupSearcher:
    """Runs the seeds ``configs`` (one search, differing only in ``seed``) as one batched model.

    ``out_dirs``: one folder per seed for its checkpoints (None: none kept). ``callbacks`` are every seed's;
    ``seed_callbacks`` (seed -> callbacks) a seed's own. Each seed's callbacks get its ``on_epoch_end(report,
    checkpoint_path)`` and ``on_search_end(result)`` (``report.seed`` names it), and ``on_search_failed(failure)``
    if it diverges. ``resume``: seeds whose folder holds a checkpoint continue from it (the others start afresh;
    a seed resumed after its last epoch finishes here, its ``on_search_end`` with it); a checkpoint of another
    search is a ``CheckpointError``.
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
        members = []
        rngs = {}
        for config, out_dir in zip(configs, out_dirs):
            callbacks_of_seed = [*shared, *own.get(config.seed, ())]
            members.append(Searcher.open(config, out_dir, callbacks=callbacks_of_seed, resume=resume))
            # A step draws nothing from the global generators (data draws use their own, seeded by seed and
            # epoch), so the state a seed's construction or resume left is what its checkpoints carry.
            rngs[config.seed] = rng_state()
        self._start(members, rngs)

    @classmethod
    def of(cls, members: Sequence[SeedSearch]) -> SeedGroupSearcher:
        """The group of seeds already built (a :class:`Searcher` runs as the group of itself)."""
        check_group([m.config for m in members])
        group = cls.__new__(cls)
        group._start(list(members), {m.config.seed: rng_state() for m in members})
        return group

    def _start(self, members: list[SeedSearch], rngs: dict[int, dict[str, Any]]) -> None:
        self.members = members
        self._rng = rngs
        lengths = {(len(m.data.train), len(m.data.val)) for m in self.members}
        if len(lengths) > 1:
            raise ConfigError(f"the seeds' data splits differ in batches per epoch: {sorted(lengths)}")
        self.result = GroupResult()
        self._step: SearchStep | None = None
        self._stepped: list[SeedSearch] = []
        for member in self.members:
            if member.done:  # resumed after its last epoch
                self.result.results[member.config.seed] = member.finish()

    @classmethod
    def from_seeds(cls, config: SearchConfig, seeds: Sequence[int], **kwargs: Any) -> SeedGroupSearcher:
        """The group of ``config`` at each of ``seeds``."""
        return cls([config_from_dict({**config.to_dict(), "seed": seed}) for seed in seeds], **kwargs)

    @property
    def active(self) -> list[SeedSearch]:
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
        step = self.step_of(cohort)
        config, epoch, arch_active = cohort[0].config, lowest, cohort[0].arch_active
        step.accumulator.reset()
        totals = torch.zeros(len(cohort), 6, dtype=torch.float64, device=step.device)
        finite: list[torch.Tensor] = []
        started = time.perf_counter()
        steps = len(cohort[0].data.train)  # the stream's batches per pass: full batches only (drop_last)
        streams = [zip(m.data.train.epoch(epoch), val_batches(m.data.val, epoch, steps)) for m in cohort]
        with warm_up(step.w_opt, epoch, config.w_lr_warmup_epochs):
            lrs = (step.w_opt.param_groups[0]["lr"], step.a_opt.param_groups[0]["lr"])
            for pairs in zip(*streams):
                train, val = zip(*pairs)
                step_totals, step_finite = step.train_step(
                    stack_batches(train), stack_batches(val), arch_active=arch_active
                )
                totals += step_totals
                finite.append(step_finite)
        seconds = time.perf_counter() - started
        step.scheduler.step()
        step.write_back(cohort)
        per_seed = totals.tolist()
        flags = torch.stack(finite).tolist() if finite else [[True] * len(cohort)]
        return self._end_epochs(cohort, arch_active, per_seed, lrs, seconds, flags)

    def _end_epochs(
        self,
        cohort: list[SeedSearch],
        arch_active: bool,
        per_seed: list[list[float]],
        lrs: tuple[float, float],
        seconds: float,
        flags: list[list[bool]],
    ) -> list[EpochReport]:
        """Each seed ends its epoch with its own code, under its own RNG state; failures and finishes leave."""
        reports = []
        for index, member in enumerate(cohort):
            seed = member.config.seed
            with self._rng_of(seed):
                try:
                    finite = [row[index] for row in flags]
                    reports.append(member.end_epoch(arch_active, per_seed[index], lrs, seconds, finite))
                except SearchError as error:
                    failure = SeedFailure(seed, member.epoch + 1, str(error))
                    self.result.failures[seed] = failure
                    call(member.callbacks, "on_search_failed", failure)
                    continue
            if member.done:
                self.result.results[seed] = member.finish()
        return reports

    def step_of(self, cohort: list[SeedSearch]) -> SearchStep:
        """The step of ``cohort``, rebuilt from the seeds' own state when the cohort changed."""
        if (
            self._step is None
            or len(cohort) != len(self._stepped)
            or any(a is not b for a, b in zip(cohort, self._stepped))
        ):
            self._step, self._stepped = None, []  # free the old stacked state before building the new one
            self._step, self._stepped = SearchStep(cohort), list(cohort)
        return self._step

    @contextlib.contextmanager
    def _rng_of(self, seed: int) -> Iterator[None]:
        set_rng_state(self._rng[seed])
        try:
            yield
        finally:
            self._rng[seed] = rng_state()


class Searcher(SeedSearch):
    """One seed's search, run as the seed group of itself: ``Searcher(config, out_dir=...).run()``.

    Everything but the loop is :class:`~.seed.SeedSearch`'s; :meth:`run` and :meth:`run_epoch` go through
    :class:`SeedGroupSearcher`, so one seed and K seeds share one epoch loop and one step.
    """

    _group: SeedGroupSearcher | None = None

    def group(self) -> SeedGroupSearcher:
        """The group of this seed alone (kept, so its step is built once)."""
        if self._group is None:
            self._group = SeedGroupSearcher.of([self])
        return self._group

    def step(self) -> SearchStep:
        """The step this seed's epochs run (for tests and benchmarks that drive single steps)."""
        return self.group().step_of([self])

    def run(self) -> SearchResult:
        """Run epochs until the schedule ends or Algorithm 1 stops the seed; a divergence raises SearchError."""
        while not self.done:
            self.run_epoch()
        return self.result()

    def run_epoch(self) -> EpochReport:
        group = self.group()
        if self.done:
            raise SearchError(f"seed {self.config.seed}: the search has ended ({self.stop_reason})")
        reports = group.run_epoch()
        failure = group.result.failures.get(self.config.seed)
        if failure is not None:
            raise SearchError(failure.error)
        return reports[0]

    def result(self) -> SearchResult:
        """The result of a seed that is :attr:`done`: its group recorded it when the seed ended (or, for a seed
        resumed after its last epoch, when the group was built), ``on_search_end`` with it."""
        return self.group().result.results[self.config.seed]
