"""One evaluation run inside a Ray Tune trial: the retrain worker's own training loop
(:func:`ostr_ray.retrain.worker.train_loop`) with a one-process Tune session, so a run trains exactly as
``ostr-ray retrain`` does (same schedule, data order, checkpoints holding the metrics history); a retried or
resumed trial continues from its last epoch's checkpoint. Tune pickles this function by reference."""

from __future__ import annotations

from typing import Any

from ostr_ray.retrain.worker import Session, train_loop


def loop_config(spec: Any, run: dict[str, Any]) -> dict[str, Any]:
    """The training loop's settings for one (cell, seed) of ``spec``: the protocol with ``seed`` = the run's."""
    cell = spec.cell(run["cell"])
    return {
        "space": spec.space,
        "genotype_json": cell["genotype_json"],
        "dataset": spec.dataset,
        "data_dir": spec.data_dir,
        "config": {**spec.config, "seed": run["seed"]},
        "num_classes": spec.num_classes,
        "cpus_per_worker": spec.cpus_per_run,
        "debug": spec.debug,
    }


def evaluation_trial(config: dict[str, Any]) -> None:
    """Tune's trial function: ``config["run"]`` names the run, ``config["run"]["loop"]`` is its loop config."""
    import torch
    from ray import tune

    loop = config["run"]["loop"]
    use_gpu = float(config["run"].get("gpus", 0)) > 0 and torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    session = Session(
        rank=0,
        world=1,
        device=device,
        checkpoint=tune.get_checkpoint(),
        prepare_model=lambda model: model.to(device),
        report=tune.report,
        checkpoint_from=tune.Checkpoint.from_directory,
    )
    train_loop(loop, session)
