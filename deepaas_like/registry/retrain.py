"""Retraining an uploaded scikit-learn model: a clone of a version's estimator fitted on new
rows becomes the model's next version.

``POST /v2/models/{name}/train/`` with rows and a target column starts a training job whose
work is :func:`retrain`: in a process of its own, contained as the registry's hosts are (the
same sandbox; in the version's own environment when it has one), the version's file is
loaded, its estimator cloned (``sklearn.base.clone``: the same hyper-parameters) and fitted,
and the fitted estimator's file is recorded through the registry's upload path (the same
checks, signature, columns; ``loading`` → ``ready``; current if newer, as an upload). The
new version's record says where it came from (``source``, as a plugin's trained version
says it: ``kind`` training, ``training`` the job, the parent version, the rows, the target),
and keeps the training rows' features as its reference dataset, so that feature impact runs
on it at once::

    plan = plan_retraining(registry, "iris", rows, {"target": "species"})  # 4xx now, not later
    result = await retrain(registry, plan, job, log, owner="alice")       # the job's work
    # {"version": 3, "status": "ready", "parent": 2, "rows": 150, "target": "species", ...}

Nothing here loads a model file: the training process does (:mod:`.retrain_worker`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Callable

from ..engine.calls import CallFailure, Ok, Outcome, Unserved
from ..engine.forking import starter
from ..engine.process import WorkerLost, WorkerProcess, WorkerStartFailed
from ..engine.shared import contained
from ..engine.worker import WorkerConfig
from ..errors import ArgumentError, Conflict, DeepaasError, NotImplementedByModel
from ..frameworks import Signature, declared_frameworks
from ..loading import PluginRef
from .host import FRAMEWORKS_ENV, Target
from .intake import Upload
from .optimize import chunks_of
from .records import ModelRecord, VersionRecord, VersionStatus
from .rows import columns_from_schema
from .service import Registry
from .serving import sandbox_spec

RETRAINER = PluginRef(
    "registry-retrain", "deepaas_like.registry.retrain_worker:RetrainHost", group="deepaas_like.internal"
)
LIBRARY = "sklearn"  # what can be retrained here
OPTIONS = ("target", "version")
STOP_TIMEOUT = 2.0
Row = dict[str, Any]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Retraining:
    """A retraining, checked: the version it starts from, the rows, their features and target."""

    model: ModelRecord
    parent: VersionRecord
    rows: list[Row]
    features: list[str]
    target: str

    def arguments(self) -> dict[str, Any]:
        """What the training job's document shows as its arguments."""
        return {"version": self.parent.number, "target": self.target, "rows": len(self.rows), "features": self.features}


def plan_retraining(registry: Registry, name: str, rows: list[Row], options: dict[str, Any]) -> Retraining:
    """Check a retraining before its job exists: the model and version (404, 409), that it is a
    scikit-learn model (422 naming the library), ``options`` (``target``, the column to learn;
    ``version``, default the current one), and every row (422 naming the first bad one). The
    rows are 1 to :data:`~deepaas_like.quality.samples.MAX_ROWS` (a reference dataset's bound),
    checked by whoever read them."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ArgumentError(
            f"Unknown fields: {', '.join(unknown)}; a retraining takes rows (JSON or a CSV file), {', '.join(OPTIONS)}",
            {key: ["Unknown field."] for key in unknown},
        )
    target = options.get("target")
    if not isinstance(target, str) or not target:
        raise ArgumentError(
            'Name the column to learn: target (e.g. {"rows": [...], "target": "species"})',
            {"target": ["Missing data for required field."]},
        )
    model = registry.record(name)
    parent = _parent(registry, model, options.get("version"))
    if parent.library != LIBRARY:
        raise ArgumentError(
            f"Only scikit-learn models can be retrained here: version {parent.number} of model '{name}' is a "
            f"{parent.library} model ({parent.filetype})",
            {"model": [f"A {parent.library} model, not a scikit-learn one."]},
        )
    features = _features(name, parent, rows, target)
    for index, row in enumerate(rows):
        missing = [column for column in (*features, target) if column not in row]
        if missing:
            raise ArgumentError(
                f"Row {index} lacks {', '.join(missing)}", {"rows": {str(index): [f"Missing: {', '.join(missing)}."]}}
            )
    if parent.environment is not None and (why := registry.environments.missing(parent.environment)):
        raise Conflict(
            f"Version {parent.number} of model '{name}' cannot be retrained: {why}",
            details={"model": name, "version": parent.number},
        )
    return Retraining(model, parent, rows, features, target)


def _parent(registry: Registry, model: ModelRecord, number: Any) -> VersionRecord:
    if number is None:
        number = model.current_version
        if number is None:
            raise Conflict(
                f"Model '{model.name}' has no version that loads, so nothing to retrain", details={"model": model.name}
            )
    elif not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ArgumentError("version must be a positive integer", {"version": ["Not a valid version."]})
    parent = registry.version(model.name, number)
    if parent.status is not VersionStatus.READY:
        raise Conflict(
            f"Version {number} of model '{model.name}' is {parent.status}; only a ready version can be retrained",
            details={"model": model.name, "version": number, "status": parent.status},
        )
    return parent


def _features(name: str, parent: VersionRecord, rows: list[Row], target: str) -> list[str]:
    """The columns the clone is fitted on: the version's named inputs (its input schema's, or its
    file's; each row gives them and nothing else but the target), or, for a version with unnamed
    inputs, the rows' other columns in the first row's order (as many as the version takes)."""
    given = list(dict.fromkeys(key for row in rows for key in row))
    if target not in given:
        raise ArgumentError(
            f"The rows have no column '{target}' (the target); they have {', '.join(given)}",
            {"target": [f"Not a column of the rows: {', '.join(given)}."]},
        )
    others = [key for key in given if key != target]
    signature = Signature.from_json(parent.signature or {})
    schema = parent.config.get("input_schema")
    named = columns_from_schema(schema) if schema else signature.columns
    if named is not None:
        declared = [c.name for c in named]
        unknown = [key for key in others if key not in declared]
        if unknown:
            raise ArgumentError(
                f"The rows give {', '.join(unknown)}, which version {parent.number} of model '{name}' does not take "
                f"(its inputs: {', '.join(declared)}; the target: {target})",
                {"rows": ["Unknown features."]},
            )
        return declared
    if signature.n_inputs is not None and len(others) != signature.n_inputs:
        raise ArgumentError(
            f"Version {parent.number} of model '{name}' takes {signature.n_inputs} inputs; the rows give "
            f"{len(others)} besides the target ({', '.join(others)})",
            {"rows": ["Wrong number of features."]},
        )
    if not others:
        raise ArgumentError("The rows give no feature besides the target", {"rows": ["No features."]})
    return others


# --- the job's work --------------------------------------------------------------------------


class RetrainRun:
    """The training process of one retraining: started, asked to fit, stopped (or killed: cancel)."""

    def __init__(self, registry: Registry, plan: Retraining) -> None:
        section = registry.section
        parent = plan.parent
        launch = registry.environments.launch(parent.environment) if parent.environment is not None else None
        config = WorkerConfig(
            model=plan.model.name,
            log_level=section.engine.log_level,
            environ=((FRAMEWORKS_ENV, json.dumps(declared_frameworks())),) if launch is not None else (),
            # (its answer, the fitted file in base64, is bounded as an ONNX conversion's is)
            sandbox=sandbox_spec(section),
            environment=launch,
        )
        self.target: Target = registry.serving.target(parent, None)
        self._worker = WorkerProcess(RETRAINER, config, starter(section.engine.start_method))
        self.killed = False

    async def run(self, payload: dict[str, Any]) -> Outcome:
        """Start the process, fit, stop it; the call's outcome. The process is gone when this returns."""
        worker = self._worker
        try:
            try:
                await worker.start()
            except WorkerStartFailed as exc:
                raise DeepaasError(f"the training process could not start: {exc}") from None
            if self.target.contained_only and not contained(worker):
                raise DeepaasError(
                    f"loading a {self.target.filetype} file runs code, and the training process could not be "
                    "contained; start the server with --allow-unconfined-code to retrain such models uncontained"
                )
            (answer,) = worker.submit("train", [payload], target=self.target)
            return await answer
        finally:
            await asyncio.shield(worker.stop(timeout=0 if self.killed else STOP_TIMEOUT))

    def kill(self) -> None:
        """Cancel: the process is killed now."""
        self.killed = True
        self._worker.kill()


async def retrain(
    registry: Registry,
    plan: Retraining,
    job: Any,
    log: Log,
    *,
    owner: str | None,
    may_add_version: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The work of a retraining's job (``job``: its :class:`~deepaas_like.jobs.model.Job`, whose
    ``training`` is the process while it runs, so that a cancel kills it): fit in the training
    process, record the fitted file as the model's next version, keep the rows as its reference
    dataset. A failed fit raises with the fit's error, and records nothing."""
    name, parent = plan.model.name, plan.parent
    log(
        f"retraining version {parent.number} of model '{name}' ({parent.filetype}): a clone of its estimator "
        f"fitted on {len(plan.rows)} rows, features {', '.join(plan.features)}, target {plan.target}"
    )
    run = RetrainRun(registry, plan)
    job.training = run
    payload = {
        "rows": [[row[f] for f in plan.features] for row in plan.rows],
        "labels": [row[plan.target] for row in plan.rows],
        "columns": plan.features,
        "filetype": "skops" if parent.filetype == "skops" else "joblib",
    }
    try:
        outcome = await run.run(payload)
    finally:
        job.training = None
    fitted = _fitted(outcome, name)
    for line in str(fitted.get("log") or "").splitlines():
        log(f"fit: {line}")
    log(f"fitted a {fitted.get('estimator')} in {float(fitted.get('seconds') or 0):.2f} s")
    # From here the version is recorded whatever happens to the job: a cancel now comes too late.
    version = await asyncio.shield(_record(registry, plan, job.id, fitted, owner, may_add_version))
    log(f"recorded as version {version.number}: {version.status}{f' ({version.error})' if version.error else ''}")
    if version.status is not VersionStatus.READY:
        raise DeepaasError(f"the fitted model was recorded as version {version.number}, but {version.error}")
    current = registry.record(name).current_version
    return {
        "version": version.number,
        "status": version.status,
        "current_version": current,
        "parent": parent.number,
        "rows": len(plan.rows),
        "target": plan.target,
        "sha256": version.sha256,
    }


def _fitted(outcome: Outcome, name: str) -> dict[str, Any]:
    """The training process's answer, checked (it comes from a process that ran uploaded code)."""
    if isinstance(outcome, Unserved):
        error = outcome.error
        if isinstance(error, WorkerLost):
            raise DeepaasError(f"the training process died (exit code {error.exitcode})")
        raise error
    if isinstance(outcome, CallFailure):
        if outcome.not_implemented or outcome.missing_method:
            raise NotImplementedByModel(outcome.message, details={"model": name})
        raise DeepaasError(f"the fit failed: {outcome.text}")
    if not isinstance(outcome, Ok):
        raise DeepaasError("the training process ended before it fitted the model")
    answer = outcome.value
    if not isinstance(answer, dict) or not isinstance(answer.get("file"), str):
        raise DeepaasError("the training process answered no model file")
    return answer


async def _record(
    registry: Registry,
    plan: Retraining,
    job_id: str,
    fitted: dict[str, Any],
    owner: str | None,
    may_add_version: Callable[[], None] | None,
) -> VersionRecord:
    """The fitted file as the model's next version, through the upload path; its provenance,
    its environment (the parent's), and the rows' features as its reference dataset."""
    name, parent = plan.model.name, plan.parent
    try:
        data = base64.b64decode(fitted["file"], validate=True)
    except (binascii.Error, ValueError):
        raise DeepaasError("the training process answered a model file that is not base64") from None
    filetype = "skops" if fitted.get("filetype") == "skops" else "joblib"
    artifact = await registry.artifacts.stage(chunks_of(data))
    upload = Upload(artifact, filename=f"{name}-retrained.{filetype}", library=LIBRARY, filetype=filetype)
    source = {"kind": "training", "training": job_id, "parent": parent.number, "rows": len(plan.rows)}
    config: dict[str, Any] = {"source": {**source, "target": plan.target, "features": plan.features}}
    if parent.environment is not None:  # served where it was fitted: in the parent's environment
        config.update({k: parent.config[k] for k in ("requirements", "build")})
    config.update({k: parent.config[k] for k in ("input_schema", "batching") if parent.config.get(k)})
    if "input_schema" not in config and not fitted.get("named"):  # fitted on an array (no pandas there)
        config["input_schema"] = {"type": "object", "properties": {f: {"type": "number"} for f in plan.features}}
    try:
        _, _, version = await registry.upload(name, upload, owner=owner, may_add_version=may_add_version, config=config)
    except BaseException:
        registry.discard(upload.artifact)
        raise
    if parent.environment is not None:
        await asyncio.to_thread(registry.environments.record, name, version.number, parent.environment)
    if version.status is VersionStatus.READY:
        rows = [{f: row[f] for f in plan.features} for row in plan.rows]
        await registry.datasets.save(name, version.number, _csv(rows, plan.features), rows)
    return version


def _csv(rows: list[Row], columns: list[str]) -> bytes:
    """Rows as a CSV file with a header line (what a reference dataset is)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


__all__ = ["RetrainRun", "Retraining", "plan_retraining", "retrain"]
