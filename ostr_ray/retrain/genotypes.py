"""The GENOTYPE argument: a genotype string or JSON, a JSON file, a launch or search directory, or an MLflow run
id, resolved to ``(space, genotype, source)`` by :func:`resolve_genotype`."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ostr_ray.core.criteria import DEFAULT_CRITERION
from ostr_ray.experiment import LaunchDir, LaunchDirError, LaunchReport, MlflowRunMap, SearchDir, trial_run_key
from ostr_ray.experiment.storage import is_uri
from ostr_ray.retrain.protocols import RetrainError
from ostr_ray.tracking import schema
from ostr_ray.tracking.store import client as mlflow_client

MLFLOW_RUN_ID = re.compile(r"^(?:runs:/)?([0-9a-f]{32})/?$")
CONSENSUS_TAGS = (schema.CONSENSUS, schema.LEGACY_CONSENSUS)


def resolve_genotype(
    text: str,
    *,
    criterion: str | None = None,
    seed: int | None = None,
    variant: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[str, Any, dict[str, Any]]:
    """``(space name, genotype, source)`` for the GENOTYPE argument.

    Accepted: an NB201 string; a DARTS genotype (short string, ``Genotype(...)`` repr, or JSON); a JSON file
    (a genotype's JSON, or a ``{criterion: genotype}`` mapping such as the ``genotypes.json`` artifact); a
    launch directory or its ``report.json`` (the variant's consensus genotype; ``seed`` picks that seed's
    genotype of ``criterion``, default the launch's criterion; ``criterion`` alone picks the criterion's
    consensus); an ``ostr-ray search`` output directory (its final genotype of ``criterion``); or an MLflow run
    id (``runs:/<id>`` too) of a search trial or launch, read from its ``genotype.<criterion>`` /
    ``consensus_genotype`` tags (:mod:`ostr_ray.tracking.recorder`'s names), else its ``genotypes.json`` artifact; with
    ``seed``, the launch run's trial of that seed.

    ``source`` always has ``search_run_id`` and ``parent_run_id`` (None when unknown) and says where the
    genotype came from (``kind``: text, file, launch, search, mlflow). A launch directory's MLflow record
    (``mlflow_runs.json``) gives the run ids and its ``tracking_uri``.
    """
    if not isinstance(text, str) or not text.strip():
        raise RetrainError("GENOTYPE is empty; give a genotype, a JSON file, a launch dir or an MLflow run id")
    text = text.strip()
    source: dict[str, Any] = {"kind": "text", "search_run_id": None, "parent_run_id": None}
    if is_uri(text):  # a launch or search directory in object storage (s3://bucket/runs/name)
        remote = {**source, "kind": "file", "path": text.rstrip("/")}
        return _from_directory(text.rstrip("/"), criterion=criterion, seed=seed, variant=variant, source=remote)
    path = Path(text).expanduser()
    try:
        is_path = path.exists()
    except (OSError, ValueError):  # e.g. a long genotype repr is not a valid file name
        is_path = False
    if is_path:
        return _from_path(path, criterion=criterion, seed=seed, variant=variant, source=source)
    match = MLFLOW_RUN_ID.match(text)
    if match:
        return _from_mlflow(match.group(1), criterion=criterion, seed=seed, variant=variant, tracking_uri=tracking_uri)
    space, genotype = decode_genotype(text)
    return space, genotype, source


def decode_genotype(text: str, space: str | None = None) -> tuple[str, Any]:
    """Decode a genotype string or JSON text; the space comes from the JSON's ``space``, the hint, or else the
    first registered space whose parser accepts the text."""
    from searchspaces import SearchSpaceError, get_space, list_spaces

    if not isinstance(text, str):
        raise RetrainError(f"a genotype must be text, got {type(text).__name__}: {text!r}")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RetrainError(f"genotype JSON {_short(stripped)} does not parse: {exc}") from None
        space = data.get("space", space) if isinstance(data, dict) else space
    errors = []
    for name in [space] if space else list_spaces():
        try:
            return name, get_space(name).parse_genotype(stripped)
        except SearchSpaceError as exc:
            errors.append(f"{name}: {exc}")
    raise RetrainError(f"cannot decode genotype {_short(stripped)} ({'; '.join(errors)})")


def _short(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _from_path(
    path: Path, *, criterion: str | None, seed: int | None, variant: str | None, source: dict[str, Any]
) -> tuple[str, Any, dict[str, Any]]:
    source = {**source, "kind": "file", "path": str(path.resolve())}
    if path.is_dir():
        return _from_directory(path, criterion=criterion, seed=seed, variant=variant, source=source)
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RetrainError(f"cannot read genotype file {path}: {exc}") from None
    if not raw.strip().startswith("{"):
        space, genotype = decode_genotype(raw)
        return space, genotype, source
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RetrainError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and ("variants" in data or "final_genotypes" in data):
        return _from_directory(path.parent, criterion=criterion, seed=seed, variant=variant, source=source)
    if "space" in data or "arch" in data or "normal" in data:
        space, genotype = decode_genotype(json.dumps(data))
        return space, genotype, source
    text = _pick_genotype(data, criterion, f"genotype file {path}")
    space, genotype = decode_genotype(text)
    return space, genotype, source


def _from_directory(
    path: Path | str, *, criterion: str | None, seed: int | None, variant: str | None, source: dict[str, Any]
) -> tuple[str, Any, dict[str, Any]]:
    """A launch directory (its report's consensus, or a seed's genotype) or a search directory (its final one)."""
    launch = LaunchDir(path)
    try:
        report = launch.read_report(required=False)
        if report is not None:
            return _from_launch_report(report, launch, criterion=criterion, seed=seed, variant=variant)
        search = SearchDir(path)
        if not search.has_record():
            raise RetrainError(f"{path} has no report.json: not an ostr-ray launch or search directory")
        record = search.read_record()
    except LaunchDirError as exc:
        raise RetrainError(str(exc)) from None
    crit = criterion or record.config.get("criterion", DEFAULT_CRITERION)
    text = record.result.final_genotypes.get(crit)
    if not text:
        raise RetrainError(
            f"search report {path} has no {crit!r} genotype; it has {sorted(record.result.final_genotypes)}"
        )
    space, genotype = decode_genotype(text, record.result.space)
    return space, genotype, {**source, "kind": "search", "criterion": crit, "seed": record.result.seed}


def _pick_genotype(data: Mapping[str, Any], criterion: str | None, what: str) -> str:
    """The genotype in a ``{criterion: genotype}`` mapping (``genotypes.json``), optionally with a
    ``consensus`` entry or a nested ``genotypes`` mapping."""
    nested = data.get("genotypes") if isinstance(data.get("genotypes"), Mapping) else {}
    table = {**{k: v for k, v in data.items() if isinstance(v, str)}, **nested}
    if criterion is not None:
        if not table.get(criterion):
            raise RetrainError(f"{what} has no genotype for criterion {criterion!r}; it has {sorted(table)}")
        return table[criterion]
    for key in ("consensus", "consensus_genotype", DEFAULT_CRITERION):
        if table.get(key):
            return table[key]
    genotypes = [v for v in table.values() if v]
    if len(genotypes) == 1:
        return genotypes[0]
    raise RetrainError(f"{what} holds no single genotype; pick one with --criterion from {sorted(table)}")


def choose_variant(report: LaunchReport, variant: str | None, where: str) -> str:
    """``variant``, or the launch's only one; a ``RetrainError`` naming the variants otherwise."""
    if variant is None:
        if len(report.variants) != 1:
            raise RetrainError(f"launch {where} has variants {sorted(report.variants)}; pick one with --variant")
        variant = next(iter(report.variants))
    if variant not in report.variants:
        raise RetrainError(f"launch {where} has no variant {variant!r}; it has {sorted(report.variants)}")
    return variant


def _from_launch_report(
    report: LaunchReport, launch: LaunchDir, *, criterion: str | None, seed: int | None, variant: str | None
) -> tuple[str, Any, dict[str, Any]]:
    where = launch.path
    variant = choose_variant(report, variant, where)
    data = report.variants[variant]
    config = report.launch.variants.get(variant, {}) if report.launch else {}
    space_hint = data.space or config.get("space")
    crit = criterion or data.criterion or report.criterion or config.get("criterion") or DEFAULT_CRITERION
    runs = _launch_mlflow_runs(launch)
    source: dict[str, Any] = {
        "kind": "launch",
        "path": where,
        "variant": variant,
        "search_run_id": runs.parent_run_id,  # the consensus comes from the launch run itself
        "parent_run_id": runs.parent_run_id,
        "tracking_uri": runs.tracking_uri,
        "experiment_id": runs.experiment_id,
    }
    if seed is not None:
        if seed not in data.seeds:
            raise RetrainError(f"launch {where} has no seed {seed}; seeds are {sorted(data.seeds)}")
        text = data.seeds[seed].genotypes.get(crit)
        if not text:
            raise RetrainError(f"seed {seed} of launch {where} has no {crit!r} genotype")
        trial_run = runs.children.get(trial_run_key(variant, seed))
        source.update(seed=seed, criterion=crit, search_run_id=trial_run or source["search_run_id"])
    elif criterion is not None:
        text = data.criterion_consensus.get(criterion)
        if not text:
            raise RetrainError(f"launch {where} has no consensus genotype for criterion {criterion!r}")
        source.update(criterion=criterion, consensus=True)
    else:
        text = data.consensus_genotype
        if not text:
            raise RetrainError(f"launch {where} has no consensus genotype yet (variant {variant!r})")
        source.update(criterion=crit, consensus=True)
    space, genotype = decode_genotype(text, space_hint)
    return space, genotype, source


def _launch_mlflow_runs(launch: LaunchDir) -> MlflowRunMap:
    """The launch's MLflow record (tracking URI, experiment, parent run and ``{"<variant>/<seed>": child run}``);
    empty when the launch was not tracked."""
    try:
        return launch.read_runs() or MlflowRunMap()
    except LaunchDirError:
        return MlflowRunMap()


def _from_mlflow(
    run_id: str, *, criterion: str | None, seed: int | None, variant: str | None, tracking_uri: str | None
) -> tuple[str, Any, dict[str, Any]]:
    """A launch run (``ostr.role=parent``: its ``consensus_genotype`` tag, ``<variant>/consensus_genotype``
    with several variants; ``seed`` goes to that seed's trial run) or a trial run (``genotype.<criterion>``)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RetrainError(
            f"no MLflow run {run_id} at {tracking_uri}: {str(exc).splitlines()[0]} (pass --tracking-uri?)"
        ) from None
    if seed is not None:
        run = _child_for_seed(client, run, seed, variant)
    tags, params = run.data.tags, run.data.params
    parent_tags = tags
    if tags.get(schema.PARENT_RUN):
        try:
            parent_tags = client.get_run(tags[schema.PARENT_RUN]).data.tags
        except MlflowException:
            parent_tags = {}
    space_hint = tags.get(schema.SPACE) or params.get(schema.SPACE_PARAM)
    default_crit = (
        tags.get(schema.CRITERION)
        or parent_tags.get(schema.CRITERION)
        or params.get(schema.CRITERION_PARAM)
        or DEFAULT_CRITERION
    )
    consensus = _consensus_tag(tags, variant, run.info.run_id)
    text = None
    if criterion is not None:
        text = tags.get(schema.GENOTYPE_PREFIX + criterion)
    elif consensus:
        text = consensus
    else:
        text = tags.get(schema.GENOTYPE_PREFIX + default_crit)
    if not text:
        text = _genotype_artifact(client, run.info.run_id, criterion)
    if not text:
        wanted = f"tag {schema.GENOTYPE_PREFIX}{criterion or default_crit}"
        raise RetrainError(
            f"MLflow run {run.info.run_id} has no genotype "
            f"({wanted}, {schema.CONSENSUS} or a {schema.GENOTYPES_ARTIFACT} artifact)"
        )
    space, genotype = decode_genotype(text, space_hint)
    from_consensus = criterion is None and bool(consensus)
    source = {
        "kind": "mlflow",
        "search_run_id": run.info.run_id,
        # a trial nests under its launch's run; a launch's consensus nests under the launch run itself
        "parent_run_id": tags.get(schema.PARENT_RUN) or (run.info.run_id if from_consensus else None),
        "experiment_id": run.info.experiment_id,
        "tracking_uri": tracking_uri,
        "criterion": None if from_consensus else (criterion or default_crit),
        "consensus": from_consensus,
    }
    if tags.get(schema.SEED) is not None:
        source["seed"] = int(tags[schema.SEED])
    return space, genotype, source


def _consensus_tag(tags: Mapping[str, str], variant: str | None, run_id: str) -> str | None:
    """The consensus genotype tag: ``consensus_genotype`` (the tracking module's, one variant),
    ``<variant>/consensus_genotype`` (several variants) or ``ostr.consensus_genotype``."""
    if variant is not None:
        return tags.get(schema.variant_key(variant, schema.CONSENSUS))
    for name in CONSENSUS_TAGS:
        if tags.get(name):
            return tags[name]
    split = ((*schema.split_variant_key(key), value) for key, value in tags.items())
    per_variant = {v: value for v, name, value in split if v and name == schema.CONSENSUS and value}
    if len(per_variant) > 1:
        raise RetrainError(f"MLflow run {run_id} has variants {sorted(per_variant)}; pick one with --variant")
    return next(iter(per_variant.values()), None)


def _child_for_seed(client: Any, run: Any, seed: int, variant: str | None) -> Any:
    """The trial run (child) of a launch run whose ``ostr.seed`` tag (or ``seed`` param) is ``seed``."""
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`{schema.PARENT_RUN}` = '{run.info.run_id}'", max_results=1000
    )
    matches = [
        child
        for child in children
        if str(seed) in (child.data.tags.get(schema.SEED), child.data.params.get(schema.SEED_PARAM))
        and variant in (None, child.data.tags.get(schema.VARIANT))
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RetrainError(f"MLflow run {run.info.run_id} has no child run for seed {seed}")
    variants = sorted(str(m.data.tags.get(schema.VARIANT)) for m in matches)
    raise RetrainError(f"MLflow run {run.info.run_id} has seed {seed} in variants {variants}; pick one with --variant")


def _genotype_artifact(client: Any, run_id: str, criterion: str | None) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, schema.GENOTYPES_ARTIFACT, tmp)
            data = json.loads(Path(local).read_text())
    except (MlflowException, OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, Mapping):
        return None
    try:
        return _pick_genotype(data, criterion, f"artifact {schema.GENOTYPES_ARTIFACT} of run {run_id}")
    except RetrainError:
        return None
