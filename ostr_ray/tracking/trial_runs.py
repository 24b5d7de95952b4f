"""The child runs of a launch: one per (variant, seed) trial, created at its first report (or when it fails
before one), fed one metric value per epoch, closed with its final genotypes, history and plots.

Re-sent epochs (a retried trial, a resumed launch) never log a second value: each run remembers the last
epoch the store already holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mlflow.entities import Metric, RunTag

from ostr_ray.core.coordinator import TrialKey
from ostr_ray.core.cost import cell_cost
from ostr_ray.core.events import EpochReport
from ostr_ray.experiment import LaunchSpec, trial_run_key
from ostr_ray.tracking import plots, schema
from ostr_ray.tracking.runs import RunStore

PLOT_EVERY = 5
"""Heatmaps of a trial's alphas, betas and strengths every this many epochs (and at its end)."""

Plotter = Callable[..., None]
"""``plot(run_id, artifact_file, draw_function, *args)``: draws and logs a figure, never raises."""


@lru_cache(maxsize=256)
def _cell_cost(space: str, genotype: str) -> dict[str, Any]:
    """Cached: seeds often agree, and counting a DARTS network's multiply-adds takes seconds."""
    return cell_cost(space, genotype)


def trial_key(key: Any) -> TrialKey:
    return TrialKey(str(key[0]), int(key[1]))


@dataclass
class TrialRun:
    run_id: str
    last_epoch: int = 0
    """Last epoch whose metrics are in the store: re-sent epochs are not logged twice."""
    open: bool = True
    reports: dict[int, EpochReport] = field(default_factory=dict)
    plotted: set[int] = field(default_factory=set)


class TrialRuns:
    """Every trial's child run under one parent run."""

    def __init__(self, store: RunStore, spec: LaunchSpec, parent_run_id: str, plot: Plotter, plot_every: int):
        self.store, self.spec, self.parent_run_id = store, spec, parent_run_id
        self.plot, self.plot_every = plot, plot_every
        self.runs: dict[TrialKey, TrialRun] = {}

    def adopt(self, key: TrialKey, run_id: str) -> None:
        """A run this launch made before a restart: known, closed until its trial reports again."""
        self.runs[trial_key(key)] = TrialRun(run_id, self.store.last_step(run_id, schema.TRAIN_LOSS), open=False)

    def get(self, key: TrialKey, *, create: bool) -> TrialRun | None:
        key = trial_key(key)
        if key in self.runs:
            return self.runs[key]
        run = self.store.find_child(self.parent_run_id, trial_run_key(*key))
        if run is not None:
            self.adopt(key, run.info.run_id)
        elif create:
            self.runs[key] = TrialRun(self._create(key))
        return self.runs.get(key)

    def _create(self, key: TrialKey) -> str:
        base = self.spec.variants.get(key.variant, {})
        config = {**base, "seed": key.seed} if base else {}
        tags = {
            schema.PARENT_RUN: self.parent_run_id,
            schema.ROLE: schema.ROLE_TRIAL,
            schema.TRIAL: trial_run_key(*key),
            schema.VARIANT: key.variant,
            schema.SEED: str(key.seed),
            schema.PRESET: key.variant,
            schema.SPACE: str(config.get("space", "")),
            schema.LAUNCH_PATH: self.spec.experiment_path,
        }
        params = {schema.SEED_PARAM: str(key.seed), schema.VARIANT_PARAM: key.variant, schema.PRESET_PARAM: key.variant}
        params.update({schema.SEARCH_PARAM_PREFIX + k: schema.param_value(v) for k, v in config.items()})
        return self.store.create_run(schema.trial_run_name(*key), tags, params)

    def log_epoch(self, key: TrialKey, report: EpochReport) -> None:
        run = self.get(key, create=True)
        run.reports[report.epoch] = report
        if not run.open:  # a retried or resumed trial reporting again
            self.store.reopen(run.run_id)
            run.open = True
        if report.epoch <= run.last_epoch:
            return  # re-sent after a retry or restore: already in the store
        now = int(time.time() * 1000)
        metrics = [Metric(schema.metric_key(k), float(v), now, report.epoch) for k, v in report.scalars().items()]
        tags = [RunTag(schema.GENOTYPE_PREFIX + c, schema.tag_value(g)) for c, g in report.genotypes.items() if g]
        self.store.client.log_batch(run.run_id, metrics=metrics, tags=tags)
        run.last_epoch = report.epoch
        if self.plot_every and report.epoch % self.plot_every == 0:
            self._log_heatmaps(run, report)

    def close(self, key: TrialKey, run: TrialRun, status: str, reason: str, history: list[EpochReport]) -> None:
        """Final genotypes, history and plots, then the terminal status (see :func:`schema.terminal_status`)."""
        if history:
            last = history[-1]
            client = self.store.client
            tags = [RunTag(schema.GENOTYPE_PREFIX + c, schema.tag_value(g)) for c, g in last.genotypes.items() if g]
            if last.stop_reason:
                tags.append(RunTag(schema.STOP_REASON, schema.tag_value(last.stop_reason)))
            client.log_batch(run.run_id, tags=tags)
            client.log_text(run.run_id, json.dumps(last.genotypes, indent=1), schema.GENOTYPES_ARTIFACT)
            document = {
                "trial": trial_run_key(*key),
                "space": last.space,
                "criterion": self.spec.criterion,
                "epochs": [r.to_json() for r in history],
            }
            client.log_text(run.run_id, json.dumps(document), schema.HISTORY_ARTIFACT)
            self._log_cell_cost(run, key, last)
            self._log_heatmaps(run, last)
            self.plot(run.run_id, schema.CELLS_PLOT, plots.cell_figure, last.space, last.genotypes)
        terminal = schema.terminal_status(status)
        default = "the launch ended before this trial did" if terminal == "KILLED" else "failed"
        self.store.end(run.run_id, terminal, reason or default)
        run.open = False
        run.reports.clear()  # logged; a trial that reports again (a resumed errored one) re-sends them

    def _log_cell_cost(self, run: TrialRun, key: TrialKey, last: EpochReport) -> None:
        """The watched criterion's final cell, sized as its retraining protocol builds it: the compare view
        can then sort trials by what the found architecture costs."""
        criterion = self.spec.variants.get(key.variant, {}).get("criterion", self.spec.criterion)
        genotype = last.genotypes.get(criterion)
        if not genotype:
            return
        cost = _cell_cost(last.space, genotype)
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(cost[key_]), now, last.epoch) for name, key_ in schema.CELL_COST_METRICS.items()]
        self.store.client.log_batch(run.run_id, metrics=metrics)

    def kill_open(self, reason: str) -> None:
        """Nothing may outlive its parent as RUNNING."""
        for run in self.runs.values():
            if run.open:
                self.store.end(run.run_id, "KILLED", reason)
                run.open = False

    def _log_heatmaps(self, run: TrialRun, report: EpochReport) -> None:
        if report.epoch in run.plotted or not report.alphas:
            return
        self.plot(run.run_id, schema.heatmaps_plot(report.epoch), plots.report_heatmaps, report)
        run.plotted.add(report.epoch)

    def run_ids(self) -> dict[str, str]:
        return {trial_run_key(*k): r.run_id for k, r in sorted(self.runs.items())}
