"""``ostr-ray evaluate``: a launch's cells retrained from scratch over several seeds, as one Ray Tune experiment.

Modules, each importing only those listed before it: :mod:`.selection` (which cells: the ``--cells``
selectors, random baselines, deduplication; pure), :mod:`.spec` (the options and every check before Ray
starts; ``evaluate.json``), :mod:`.trial` (one run in a Tune trial: the retrain worker's training loop),
:mod:`.mlflow_run` (the evaluation run nested under the launch's, one child per run), :mod:`.driver` (the
Tune experiment and its lifecycle: outcomes, one driver per directory, ``--resume``). The table of the
results lives in :mod:`ostr_ray.evidence.evaluation`, so ``ostr-ray report`` shows it.
"""
