"""One seed's OStr-DARTS search: the bi-level loop, strength bookkeeping, selection and Algorithm 1.

Per step (DARTS order): one architecture step on the next validation-half batch, then one weight step on a
train-half batch. An epoch is one pass over the weight-training half, as in DARTS and PC-DARTS; the
validation half is a stream that restarts when it ends (:func:`val_batches`). Strength is read from the
architecture step's own gradients (:mod:`.arch_grads`); the step keeps every number on the device and the
host synchronises once per epoch. Checkpoints (:mod:`.checkpoint`) are written after every epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ostr_ray.core.arch_grads import ArchGradients
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
from ostr_ray.core.compiled import compile_mode, maybe_compiled
from ostr_ray.core.config import SearchConfig, config_from_dict, with_decoder_settings
from ostr_ray.core.criteria import ArchState, list_criteria, select
from ostr_ray.core.early_stop import StabilityTracker, edge_decisiveness
from ostr_ray.core.events import EpochReport, SearchResult, call
from ostr_ray.core.placement import autocast_dtype, resolve_device, use_channels_last
from ostr_ray.core.schedule import make_optimizers, val_batches, warm_up
from ostr_ray.core.search_data import SearchData, build_data
from ostr_ray.core.strength import StrengthAccumulator
from searchspaces import SearchSpace, Supernet, get_space

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "SearchError", "Searcher", "read_checkpoint"]


class SearchError(RuntimeError):
    """A search that cannot go on (diverged); the message names seed, epoch and step."""


class Searcher:
    """Holds one supernet replica and runs its search epoch by epoch; resumable from any epoch boundary."""

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
        self._forward = maybe_compiled(self.model, compile_mode(config, self.device))  # the model itself on CPU
        self.weight_params = self.model.weight_parameters()
        self.arch_params = self.model.arch_parameters()
        self.w_opt, self.scheduler, self.a_opt = make_optimizers(config, self.weight_params, self.arch_params)
        self.grads = ArchGradients(
            self.model,
            self._loss,
            self.w_opt,
            self.weight_params,
            self.arch_params,
            config.w_momentum,
            config.w_weight_decay,
        )
        self.accumulator = StrengthAccumulator()
        self.trackers = {
            name: StabilityTracker(config.patience, config.min_epochs, config.tie_se) for name in list_criteria()
        }
        self.table = _load_table(config)
        self.epoch = 0
        self.history: list[EpochReport] = []
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> SearchResult:
        """Run epochs until the schedule ends or Algorithm 1 stops the seed."""
        while not self.done:
            self.run_epoch()
        return self.finish()

    @property
    def done(self) -> bool:
        """No epoch left: the schedule ended or Algorithm 1 stopped the seed."""
        return self.stop_reason is not None or self.epoch >= self.config.epochs

    def finish(self) -> SearchResult:
        """The seed's result once it is :attr:`done` (also for a seed run inside a group, :mod:`.batched`)."""
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

    def run_epoch(self) -> EpochReport:
        epoch, config = self.epoch, self.config
        arch_active = epoch >= config.arch_start_epoch
        self.model.train()
        self.accumulator.reset()
        totals = torch.zeros(6, dtype=torch.float64, device=self.device)  # loss/correct/count, train then val
        finite: list[torch.Tensor] = []
        started = time.perf_counter()
        steps = len(self.data.train)  # the stream's batches per pass: full batches only (drop_last)
        batches = zip(self.data.train.epoch(epoch), val_batches(self.data.val, epoch, steps))
        with warm_up(self.w_opt, epoch, config.w_lr_warmup_epochs):
            lrs = (self.w_opt.param_groups[0]["lr"], self.a_opt.param_groups[0]["lr"])
            for train_batch, val_batch in batches:
                step_totals, step_finite = self.train_step(train_batch, val_batch, arch_active=arch_active)
                totals += step_totals
                finite.append(step_finite)
        seconds = time.perf_counter() - started
        self.scheduler.step()
        return self.end_epoch(arch_active, totals.tolist(), lrs, seconds, finite)

    def end_epoch(
        self,
        arch_active: bool,
        totals: list[float],
        lrs: tuple[float, float],
        seconds: float,
        finite: list[torch.Tensor],
    ) -> EpochReport:
        """What follows an epoch's steps and scheduler step: the divergence check, the report (selection,
        Algorithm 1), the checkpoint and the callbacks. A seed group (:mod:`.batched`) calls it per seed."""
        self._check_finite(finite)
        report = self._finish_epoch(arch_active, totals, lrs, seconds)
        call(self.callbacks, "on_epoch_end", report, str(self.checkpoint_path) if self.out_dir else None)
        return report

    # ------------------------------------------------------------------ steps
    def train_step(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        val_batch: tuple[torch.Tensor, torch.Tensor],
        *,
        arch_active: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One search step (architecture step, then weight step): the hot path.

        Returns device tensors only -- (loss sum, correct, count) for train then val, and a finite flag --
        so the caller never waits for the device inside an epoch.
        """
        (x_train, y_train), (x_val, y_val) = train_batch, val_batch
        if arch_active:
            val_logits, val_loss = self._arch_step(x_train, y_train, x_val, y_val)
        else:
            val_logits, val_loss = self._evaluate(x_val, y_val)
        train_logits, train_loss, grad_norm = self._weight_step(x_train, y_train)
        totals = torch.stack(
            batch_totals(train_logits, y_train, train_loss) + batch_totals(val_logits, y_val, val_loss)
        )
        return totals, torch.isfinite(train_loss + val_loss + grad_norm)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        op_weights: dict[str, torch.Tensor],
        params: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            if params is None:
                logits = self._forward(x, op_weights)
            else:
                logits = functional_call(self.model, params, (x,), {"op_weights": op_weights})
        logits = logits.float()
        return logits, F.cross_entropy(logits, y)

    def _fixed_op_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.model.op_weights()

    def _arch_step(
        self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One architecture update; records this minibatch's strength readings on the way."""
        order = self.config.order
        if order == "first":
            grads = self.grads.first_order(x_val, y_val)
        elif order == "second":
            grads = self.grads.second_order(x_train, y_train, x_val, y_val)
        else:  # single level: the weight step below shares this batch; read alpha on the train data
            grads = self.grads.first_order(x_train, y_train)
        logits, loss = grads.logits, grads.loss
        if order == "single":
            with torch.no_grad():
                logits, loss = self._loss(x_val, y_val, self.model.op_weights())
        for param, grad in zip(self.arch_params, [*grads.alpha_grads.values(), *grads.extra_grads]):
            param.grad = grad
        self.accumulator.add(grads.alpha_grads, grads.betas, grads.beta_grads)  # copies: clipping comes after
        if self.config.a_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.arch_params, self.config.a_grad_clip)
        self.a_opt.step()
        return logits.detach(), loss.detach()

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.w_opt.zero_grad(set_to_none=True)
        logits, loss = self._loss(x, y, self._fixed_op_weights())
        loss.backward(inputs=self.weight_params)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.weight_params, self.config.grad_clip)
        self.w_opt.step()
        return logits.detach(), loss.detach(), grad_norm.detach()

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._loss(x, y, self.model.op_weights())

    def _check_finite(self, finite: list[torch.Tensor]) -> None:
        flags = torch.stack(finite) if finite else torch.ones(1, dtype=torch.bool)
        if bool(flags.all()):
            return
        step = int((~flags).nonzero()[0]) + 1
        kept = f"; checkpoints up to epoch {self.epoch} are kept in {self.out_dir}" if self.out_dir else ""
        raise SearchError(
            f"seed {self.config.seed}: non-finite loss or gradient at epoch {self.epoch + 1}, step {step}{kept}"
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
    ) -> Searcher:
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
