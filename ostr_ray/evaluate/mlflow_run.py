"""MLflow for an evaluation, written from the driver only: the evaluation run (nested under the launch's parent
run), one child per (cell, seed) with its params, size and per-epoch metrics (:class:`EpochLogger`, a Tune
callback), and at the end the per-cell top-1 mean and std on the evaluation run. Names in
:mod:`ostr_ray.tracking.schema`."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from ostr_ray.evaluate.selection import EvaluateError
from ostr_ray.evaluate.spec import EvaluationSpec
from ostr_ray.evidence.evaluation import FAILED, FINISHED, STOPPED_EARLY
from ostr_ray.experiment import LaunchDir, LaunchDirError
from ostr_ray.experiment.layout import ARTIFACTS, EVALUATION_DIR
from ostr_ray.tracking import schema
from ostr_ray.tracking.store import TrackingError, check_tracking_uri, launch_store_uri, resolve_tracking_uri

EXPERIMENT = "ostr-evaluate"
"""The experiment of an evaluation whose launch was not recorded in MLflow."""
RUN_STATUS = {"finished": "FINISHED", "partial": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
CHILD_STATUS = {FINISHED: "FINISHED", STOPPED_EARLY: "FINISHED", FAILED: "FAILED"}
"""A run's MLflow status by its own (a run ASHA stopped ended as asked: FINISHED, tagged with the epoch)."""


def tracking_uri_for(spec: EvaluationSpec) -> str:
    """``--tracking-uri`` > the launch's own store (or the server it recorded to) > ``MLFLOW_TRACKING_URI`` >
    a new ``mlflow.db`` in the launch directory; checked with one cheap call, before Ray starts."""
    try:
        uri = spec.tracking_uri or launch_store_uri(LaunchDir(spec.launch_path))
        uri = uri or resolve_tracking_uri(None, spec.launch_path)
        check_tracking_uri(uri)
    except (TrackingError, LaunchDirError) as exc:
        raise EvaluateError(str(exc)) from None
    return uri


def open_runs(spec: EvaluationSpec, client: Any) -> None:
    """Create the evaluation run and every run's child (or, on resume, reopen the evaluation run and create only
    the children still missing); records their ids in ``spec.mlflow``."""
    ids = spec.mlflow
    if not ids.get("evaluation_run_id"):
        launch_runs = _launch_runs(spec)
        ids["parent_run_id"] = launch_runs.parent_run_id
        ids["experiment_id"] = launch_runs.experiment_id or _experiment(spec, client)
        ids["evaluation_run_id"] = _evaluation_run(spec, client)
    else:
        client.update_run(ids["evaluation_run_id"], status="RUNNING")
        client.set_tag(ids["evaluation_run_id"], schema.RESUMED, "true")
    children = ids.setdefault("runs", {})
    diagrams: dict[str, Any] = {}
    for run in spec.runs():
        if run["name"] not in children:
            children[run["name"]] = _child_run(spec, client, run)
            _log_diagram(spec, client, children[run["name"]], run["cell"], diagrams)


def _log_diagram(spec: EvaluationSpec, client: Any, run_id: str, cell_id: str, drawn: dict[str, Any]) -> None:
    """The cell's diagram (the space's registered drawing, :func:`ostr_ray.tracking.plots.cell_figure`) as the
    child's ``plots/cells.png``, drawn once per cell. A picture is not worth failing the evaluation over."""
    from ostr_ray.tracking import plots

    cell = spec.cell(cell_id)
    try:
        if cell_id not in drawn:
            drawn[cell_id] = plots.cell_figure(
                spec.space, {f"{cell_id} ({', '.join(cell['selectors'])})": cell["genotype"]}
            )
        client.log_figure(run_id, drawn[cell_id], schema.CELLS_PLOT)
    except Exception as exc:  # noqa: BLE001 - matplotlib or the artifact store; the run trains regardless
        logging.getLogger(__name__).warning("no cell diagram for %s: %s", cell_id, exc)


def _launch_runs(spec: EvaluationSpec) -> Any:
    from ostr_ray.experiment import MlflowRunMap

    try:
        return LaunchDir(spec.launch_path).read_runs() or MlflowRunMap()
    except LaunchDirError:
        return MlflowRunMap()


def _experiment(spec: EvaluationSpec, client: Any) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = None
    if str(client.tracking_uri).startswith(("sqlite:", "file:")):
        location = (Path(spec.launch_path) / ARTIFACTS).as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def _evaluation_run(spec: EvaluationSpec, client: Any) -> str:
    from mlflow.entities import Param

    config = spec.config
    tags = {
        schema.RUN_NAME: EVALUATION_DIR,
        schema.KIND: schema.KIND_EVALUATION,
        schema.LAUNCH_PATH: spec.launch_path,
        schema.SPACE: spec.space,
        schema.PROTOCOL: config["protocol"],
        schema.DATASET: spec.dataset,
        schema.VARIANT: spec.variant,
    }
    if spec.mlflow.get("parent_run_id"):
        tags[schema.PARENT_RUN] = spec.mlflow["parent_run_id"]
    run_id = client.create_run(spec.mlflow["experiment_id"], tags=tags).info.run_id
    params = {
        "protocol": config["protocol"],
        "epochs": config["epochs"],
        "seeds": len(spec.seeds),
        "cells": len(spec.cells),
        "selectors": ",".join(spec.selectors),
        "random_seed": spec.random_seed,
        "criterion": spec.criterion,
        "cpus_per_run": spec.cpus_per_run,
        "gpus_per_run": spec.gpus_per_run,
        "scheduler": spec.scheduler.get("name", "none"),
        **{f"asha.{k}": spec.scheduler[k] for k in ("grace_period", "reduction_factor") if k in spec.scheduler},
    }
    client.log_batch(run_id, params=[Param(k, schema.param_value(v)) for k, v in params.items()])
    return run_id


def _child_run(spec: EvaluationSpec, client: Any, run: dict[str, Any]) -> str:
    from mlflow.entities import Metric, Param

    cell = spec.cell(run["cell"])
    tags = {
        schema.RUN_NAME: run["name"],
        schema.KIND: schema.KIND_EVALUATION_RUN,
        schema.PARENT_RUN: spec.mlflow["evaluation_run_id"],
        schema.CELL: cell["id"],
        schema.SELECTORS: ",".join(cell["selectors"]),
        schema.RETRAIN_GENOTYPE: schema.tag_value(cell["genotype"]),
        schema.SEED: str(run["seed"]),
        schema.SPACE: spec.space,
    }
    run_id = client.create_run(spec.mlflow["experiment_id"], tags=tags).info.run_id
    values = {k: v for k, v in spec.config.items() if k not in ("network", "spaces", "description", "seed")}
    values.update({f"network.{k}": v for k, v in spec.config["network"].items()})
    values.update(seed=run["seed"], cell=cell["id"], space=spec.space, dataset=spec.dataset, **cell["size"])
    params = [Param(k, schema.param_value(v, 500)) for k, v in values.items()]
    now = int(time.time() * 1000)
    sizes = [Metric(k, float(cell["size"][k]), now, 0) for k in schema.RETRAIN_SIZE_METRICS if k in cell["size"]]
    for i in range(0, len(params), 90):
        client.log_batch(run_id, params=params[i : i + 90])
    client.log_batch(run_id, metrics=sizes)
    return run_id


class EpochLogger(tune.Callback):
    """Logs every epoch a run reports to its child run (step = epoch, each epoch once, also across retries and
    ``--resume``) and closes the child when the run ends; ``echo`` (not saved with the experiment) prints a
    line per epoch."""

    def __init__(self, tracking_uri: str, run_ids: dict[str, str]) -> None:
        self.tracking_uri = tracking_uri
        self.run_ids = dict(run_ids)
        self.logged: dict[str, list[int]] = {}
        self.echo: Any = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "echo": None}

    def get_state(self) -> dict[str, Any]:
        return {"logged": self.logged}

    def set_state(self, state: dict[str, Any]) -> None:
        self.logged = state.get("logged", {})

    @property
    def client(self) -> Any:
        if self._client is None:
            from ostr_ray.tracking.store import client

            self._client = client(self.tracking_uri)
        return self._client

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        name = trial.config["run"]["name"]
        epoch = int(result.get("epoch", 0))
        done = self.logged.setdefault(name, [])
        if not epoch or epoch in done:
            return
        stamp = int(result.get("time", time.time()) * 1000)
        metrics = [Metric(k, float(result[k]), stamp, epoch) for k in schema.RETRAIN_EPOCH_METRICS if k in result]
        self.client.log_batch(self.run_ids[name], metrics=metrics)
        done.append(epoch)
        if self.echo is not None:
            self.echo(
                f"{name}: epoch {epoch}/{result.get('epochs')}  loss {result.get(schema.TRAIN_LOSS, 0):.4f}  "
                f"top-1 {result.get(schema.TEST_TOP1, 0):.2f}%"
            )
            if result.get("done") and epoch < int(result.get("epochs") or epoch):  # Tune's scheduler stopped it
                self.echo(f"{name}: stopped early by ASHA at epoch {epoch}/{result.get('epochs')}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.client.set_terminated(self.run_ids[trial.config["run"]["name"]], status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_ids[trial.config["run"]["name"]]
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text().strip().splitlines()
            self.client.set_tag(run_id, schema.ERROR, schema.tag_value(text[-1] if text else "failed"))
        self.client.set_terminated(run_id, status="FAILED")


def finish_runs(spec: EvaluationSpec, client: Any, report: dict[str, Any]) -> None:
    """Per cell top-1 mean / std / runs on the evaluation run, the report as its artifact, and every run closed
    with its status (a run the driver left unfinished is KILLED)."""
    from mlflow.entities import Metric

    run_id = spec.mlflow["evaluation_run_id"]
    now = int(time.time() * 1000)
    metrics = []
    for cell in report["cells"]:
        values = {schema.TOP1_MEAN: cell["top1_mean"], schema.TOP1_STD: cell["top1_std"]}
        values[schema.RUNS_DONE] = cell["runs"]
        values[schema.RUNS_STOPPED] = cell.get("stopped_early", 0)
        metrics += [
            Metric(schema.variant_key(cell["id"], k), float(v), now, 0)
            for k, v in values.items()
            if v is not None and v == v  # NaN: no finished run
        ]
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, schema.OUTCOME, report["outcome"])
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / schema.REPORT_ARTIFACT).write_text(json.dumps(report, indent=1, default=str))
        client.log_artifact(run_id, str(Path(folder) / schema.REPORT_ARTIFACT))
    for name, run in report["runs"].items():
        status = CHILD_STATUS.get(run["status"], "KILLED")
        child = spec.mlflow["runs"][name]
        if run["status"] == STOPPED_EARLY:
            client.set_tag(child, schema.STOPPED_EARLY_AT, str(run["stopped_at_epoch"]))
        if client.get_run(child).info.status == "RUNNING" or status != "FINISHED":
            client.set_terminated(child, status=status)
    client.set_terminated(run_id, status=RUN_STATUS.get(report["outcome"], "FAILED"))
