"""The experiment directory layer: where a launch's, a search's and a retrain's files are, and what each holds.

:mod:`.storage` reads and writes files locally or in remote storage; :mod:`.records` types every JSON file
(versioned, with to/from JSON); :mod:`.layout` names every file once and reads/writes records through
:class:`LaunchDir`, :class:`SearchDir` and :class:`RetrainDir`. Imports the search core's records, never Ray,
MLflow, rich or typer.
"""

from ostr_ray.experiment.layout import (
    LaunchDir,
    LaunchDirError,
    RetrainCheckpoint,
    RetrainDir,
    SearchDir,
    trial_dirname,
    trial_run_key,
)
from ostr_ray.experiment.records import (
    CoordinatorSnapshot,
    LaunchReport,
    LaunchSpec,
    MlflowRunMap,
    RecordError,
    SearchRecord,
)
from ostr_ray.experiment.storage import Storage

__all__ = [
    "CoordinatorSnapshot",
    "LaunchDir",
    "LaunchDirError",
    "LaunchReport",
    "LaunchSpec",
    "MlflowRunMap",
    "RecordError",
    "RetrainCheckpoint",
    "RetrainDir",
    "SearchDir",
    "SearchRecord",
    "Storage",
    "trial_dirname",
    "trial_run_key",
]
