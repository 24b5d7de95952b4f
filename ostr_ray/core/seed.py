"""One seed's search state: its data, supernet, optimisers, strength, Algorithm 1, reports and checkpoints.

A :class:`SeedSearch` owns everything that is a seed's own and ends its epochs with its own code (selection by
every criterion, Algorithm 1, the report, the checkpoint, the callbacks). It never steps: the steps of an epoch
are :class:`~.step.SearchStep`'s, run by the one epoch loop of :mod:`.search` for a group of K >= 1 seeds,
which hands each seed its epoch's totals and returns the stepped state to it (``SearchStep.write_back``).
So a seed's reports and checkpoints have one form whether it searched alone or in a group, and a checkpoint
resumes alone or in any group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ostr_ray.core.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from ostr_ray.core.config import SearchConfig, config_from_dict, with_decoder_settings
from ostr_ray.core.criteria import ArchState, list_criteria, select
from ostr_ray.core.early_stop import StabilityTracker, edge_decisiveness
from ostr_ray.core.events import EpochReport, SearchResult, call
from ostr_ray.core.placement import autocast_dtype, resolve_device, use_channels_last
from ostr_ray.core.schedule import make_optimizers
from ostr_ray.core.search_data import SearchData, build_data
from ostr_ray.core.strength import StrengthAccumulator
from searchspaces import SearchSpace, Supernet, get_space

__all__ = ["SearchError", "SeedSearch", "batch_totals"]


class SearchError(RuntimeError):
    """A search that cannot go on (diverged); the message names seed, epoch and step."""


class SeedSearch:
    """One seed's search state, resumable from any epoch boundary (checkpoints after every epoch)."""

    def __init__(
        self,
        config: SearchConfig,
        *,
        out_dir: str | Path | None = None,
        callbacks: Iterable[Any] = (),
        data: SearchData | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir else None
        self.callbacks = list(callbacks)
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.space: SearchSpace = with_decoder_settings(get_space(config.space), config)
        self.device = resolve_device(config)
        self.data = data or build_data(config, self.device)
        self.model: Supernet = self.space.build_supernet(
            num_classes=self.data.num_classes, in_channels=self.data.in_channels, **config.space_kwargs
        ).to(self.device)
        if use_channels_last(config, self.device):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.autocast_dtype = autocast_dtype(config, self.device)
        self.weight_params = self.model.weight_parameters()
        self.arch_params = self.model.arch_parameters()
        self.w_opt, self.scheduler, self.a_opt = make_optimizers(config, self.weight_params, self.arch_params)
        self.accumulator = StrengthAccumulator()
        self.trackers = {
            name: StabilityTracker(config.patience, config.min_epochs, config.tie_se) for name in list_criteria()
        }
        self.table = _load_table(config)
        self.epoch = 0
        self.history: list[EpochReport] = []
        self.stop_reason: str | None = None

    @classmethod
    def open(
        cls,
        config: SearchConfig,
        out_dir: str | Path | None,
        *,
        callbacks: Iterable[Any] = (),
        resume: bool = True,
        state: dict[str, Any] | None = None,
    ) -> SeedSearch:
        """The seed's search continued from its checkpoint in ``out_dir`` (or ``state``, that checkpoint already
        read) when ``resume`` and there is one, else started afresh: the one place that decides between the two."""
        if resume and (state is not None or (out_dir is not None and (Path(out_dir) / CHECKPOINT_NAME).is_file())):
            return cls.resume(out_dir, config=config, state=state, out_dir=out_dir, callbacks=callbacks)
        return cls(config, out_dir=out_dir, callbacks=callbacks)

    @property
    def done(self) -> bool:
        """No epoch left: the schedule ended or Algorithm 1 stopped the seed."""
        return self.stop_reason is not None or self.epoch >= self.config.epochs

    @property
    def arch_active(self) -> bool:
        """Whether the coming epoch updates alpha (PC-DARTS starts it late: ``arch_start_epoch``)."""
        return self.epoch >= self.config.arch_start_epoch

    def finish(self) -> SearchResult:
        """The seed's result once it is :attr:`done`; ``on_search_end`` to its callbacks."""
        if self.stop_reason is None:
            self.stop_reason = f"completed {self.epoch} epochs"
        result = SearchResult(
            seed=self.config.seed,
            space=self.config.space,
            epochs_done=self.epoch,
            final_genotypes=dict(self.history[-1].genotypes) if self.history else {},
            stop_reason=self.stop_reason,
            history=self.history,
        )
        call(self.callbacks, "on_search_end", result)
        return result

    def end_epoch(
        self,
        arch_active: bool,
        totals: list[float],
        lrs: tuple[float, float],
        seconds: float,
        finite: list[bool],
    ) -> EpochReport:
        """What follows an epoch's steps (its state already written back): the divergence check, the report
        (selection, Algorithm 1), the checkpoint and the callbacks. ``totals``: the seed's loss sum, correct and
        count, train then val; ``finite``: one flag per step."""
        self._check_finite(finite)
        report = self._finish_epoch(arch_active, totals, lrs, seconds)
        call(self.callbacks, "on_epoch_end", report, str(self.checkpoint_path) if self.out_dir else None)
        return report

    def _check_finite(self, finite: list[bool]) -> None:
        bad = next((step for step, ok in enumerate(finite, start=1) if not ok), None)
        if bad is None:
            return
        kept = f"; checkpoints up to epoch {self.epoch} are kept in {self.out_dir}" if self.out_dir else ""
        raise SearchError(
            f"seed {self.config.seed}: non-finite loss or gradient at epoch {self.epoch + 1}, step {bad}{kept}"
        )

    # ------------------------------------------------------------------ end of epoch
    def arch_state(self) -> ArchState:
        summary = self.accumulator.summary()
        with torch.no_grad():
            return ArchState(
                alphas={c: a.detach().double().cpu() for c, a in self.model.alphas.items()},
                betas={c: b.double().cpu() for c, b in self.model.op_weights().items()},
                mean=summary.mean,
                stderr=summary.stderr,
                edge_weights={c: w.detach().double().cpu() for c, w in self.model.edge_weights().items()},
            )

    def _finish_epoch(
        self, arch_active: bool, totals: list[float], lrs: tuple[float, float], seconds: float
    ) -> EpochReport:
        state = self.arch_state()
        genotypes, changed, stable_for, decisive, truth = {}, {}, {}, {}, {}
        if arch_active:
            for name, tracker in self.trackers.items():
                genotype, selection = select(name, self.space, state)
                genotypes[name] = genotype.to_str()
                changed[name] = tracker.update(self.space, genotype, selection)
                stable_for[name] = tracker.stable_for
                decisive[name] = edge_decisiveness(self.space, genotype, selection)
                if self.table is not None:
                    truth[name] = self.table.lookup(genotype)
        self.epoch += 1
        if arch_active and self.trackers[self.config.criterion].should_stop(self.epoch):
            self.stop_reason = (
                f"{self.config.criterion} genotype stable for {self.config.patience} epochs (Algorithm 1)"
            )
        train_loss, train_correct, train_n, val_loss, val_correct, val_n = totals
        report = EpochReport(
            epoch=self.epoch,
            epochs=self.config.epochs,
            seed=self.config.seed,
            space=self.config.space,
            train_loss=train_loss / max(train_n, 1),
            train_acc=train_correct / max(train_n, 1),
            val_loss=val_loss / max(val_n, 1),
            val_acc=val_correct / max(val_n, 1),
            w_lr=lrs[0],
            a_lr=lrs[1],
            arch_active=arch_active,
            alphas=_numpy(state.alphas),
            betas=_numpy(state.betas),
            scores={s: _numpy(m) for s, m in state.mean.items()},
            stderr={s: _numpy(m) for s, m in state.stderr.items()},
            edge_weights=_numpy(state.edge_weights),
            genotypes=genotypes,
            changed=changed,
            stable_for=stable_for,
            decisiveness=decisive,
            epoch_seconds=seconds,
            images_per_s=(train_n + val_n) / seconds if seconds > 0 else math.nan,
            ground_truth=truth,
            stop_reason=self.stop_reason,
        )
        self.history.append(report)
        if self.out_dir is not None:
            self.save_checkpoint(self.checkpoint_path)
        return report

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        assert self.out_dir is not None
        return self.out_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.config.fingerprint(),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "stop_reason": self.stop_reason,
            "model": self.model.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "accumulator": self.accumulator.state_dict(),
            "trackers": {n: t.state_dict() for n, t in self.trackers.items()},
            "history": [r.to_json() for r in self.history],
            "rng": rng_state(),
        }

    def save_checkpoint(self, path: Path) -> None:
        save_checkpoint(self.state_dict(), path)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.accumulator.load_state_dict(state["accumulator"])
        for name, tracker_state in state["trackers"].items():
            self.trackers[name].load_state_dict(tracker_state)
        self.history = [EpochReport.from_json(r) for r in state["history"]]
        self.epoch = int(state["epoch"])
        self.stop_reason = state["stop_reason"]
        set_rng_state(state["rng"])

    @classmethod
    def resume(
        cls,
        path: str | Path,
        *,
        config: SearchConfig | None = None,
        state: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SeedSearch:
        """Continue from a checkpoint file or a directory holding one. ``config`` (if given) must describe
        the same search; settings that do not change past epochs (data_dir, patience, ...) may differ.
        ``state`` is that checkpoint already read (:func:`read_checkpoint`), so a caller never reads it twice."""
        state = state if state is not None else read_checkpoint(path)
        saved = config_from_dict(state["config"])
        if config is None:
            config = saved
        elif config.fingerprint() != state["fingerprint"]:
            diff = sorted(k for k, v in config.to_dict().items() if state["config"].get(k) != v)
            raise CheckpointError(
                f"checkpoint {path} was made by another search (space {saved.space!r}); differing settings: "
                f"{', '.join(diff) or 'format'}"
            )
        searcher = cls(config, **kwargs)
        searcher.load_state_dict(state)
        return searcher


def batch_totals(logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> list[torch.Tensor]:
    n = labels.shape[0]
    correct = (logits.argmax(dim=1) == labels).sum()
    return [
        loss.double() * n,
        correct.double(),
        torch.tensor(float(n), dtype=torch.float64, device=loss.device),
    ]


def _numpy(cells: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {c: t.detach().cpu().numpy().astype(np.float64) for c, t in cells.items()}


def _load_table(config: SearchConfig):
    if not config.nb201_table:
        return None
    from ostr_ray.core.nb201_bench import load_nb201_table

    return load_nb201_table(config.nb201_table)
