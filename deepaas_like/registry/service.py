"""The model registry: uploaded model files served without code, with versions.

A user uploads a persisted model (``PUT /v2/models/{name}``); the file is stored by its
SHA-256, recorded as the next version of the model, loaded once in a worker of the
shared pool to learn its signature (a file that does not load is recorded as an
``error`` version, and the current one keeps serving), and served at once by the same
engine as plugins: a queue, batching, timeouts, async predictions. Versions can be
rolled back and forward, archived and restored, downloaded byte for byte.

Nothing here loads a model file: the server process only records, streams and sniffs.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from webargs import fields, validate

from ..arguments import ArgumentSpec
from ..engine.calls import Ok, unwrap
from ..background import Background
from ..database import Database, StoreOutage
from ..engine.dispatch import Dispatcher
from ..errors import ArgumentError, Conflict, DeepaasError, Forbidden, NotFound
from ..frameworks import Column, Framework, Signature, discover_frameworks
from ..jsonutil import stamp
from ..node import node_id
from ..legacy import legacy_vocabulary_allowed
from ..loading import PluginRef
from ..models import ModelState, ServedModel
from ..engine.executors import ExecutorSpec, make_shared_pool
from ..containment.sandbox import SandboxSpec
from ..settings import MIB, Settings
from ..engine.worker import WorkerConfig
from .artifacts import Artifact, ArtifactStore
from .host import CAPACITY_ENV, PRELOAD_ENV, ROWS, Target
from .records import MODEL_FIELDS, ModelRecord, RegistryStore, VersionRecord, VersionStatus

LOG = logging.getLogger(__name__)
NAME_RULE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
NAME_HELP = ("names of uploaded models are DNS labels: lower-case letters, digits and '-', at most 63 "
             "characters, starting and ending with a letter or digit")
LIBRARIES = {
    "sklearn": ("joblib", "pickle", "skops"),
    "tensorflow": ("keras", "h5"),
    "pytorch": ("torchscript", "pt2"),
    "onnx": ("onnx",),
}
FILETYPES = {filetype: library for library, types in LIBRARIES.items() for filetype in types}
# Other spellings, taken in any case: Neurodeploy's documented ones ("Scikit-learn", "TensorFlow",
# "Pytorch"; "H5", "Pickle", "Joblib") and the libraries' own names.
LIBRARY_ALIASES = {"scikit-learn": "sklearn", "scikit_learn": "sklearn", "keras": "tensorflow", "torch": "pytorch"}
FILETYPE_ALIASES = {"pkl": "pickle", "hdf5": "h5", "pt": "torchscript", "pth": "torchscript"}
NEURODEPLOY_LIBRARY = {"sklearn": "scikit-learn", "tensorflow": "tensorflow", "pytorch": "pytorch", "onnx": "onnx"}


def canonical(value: str | None, aliases: dict[str, str]) -> str | None:
    """A library's or filetype's name as the registry spells it (``Scikit-learn`` -> ``sklearn``)."""
    if value is None:
        return None
    lowered = value.strip().lower()
    return aliases.get(lowered, lowered) or None
OPTIMIZATIONS = ("onnx",)
MAX_ROWS = 10000
PROBE_ROWS = 64
AGREEMENT_TOLERANCE = 1e-4  # largest difference of a class probability that counts as agreement
LAST_PREDICT_SAVE_INTERVAL = 10.0
CATCH_UP_INTERVAL = 0.05  # seconds between reads of the store for names not known here
HOST = PluginRef("registry", "deepaas_like.registry.host:RegistryHost", group="deepaas_like.internal")


class ModelArchived(NotFound):
    pass


SAFE_FORMATS = "skops (skops.io.dump) or ONNX (skl2onnx, torch.onnx.export), Keras (.keras, .h5) or torch.export (.pt2)"


class CodeRefused(Forbidden):
    """A format whose loading runs code, where such formats cannot be served."""


def sandbox_spec(settings: Settings) -> SandboxSpec:
    """How the registry's workers are contained: what they must not reach (the server's
    state, keys and configuration), who they run as, their limits."""
    store = settings.store
    sqlite_file = store.split("///", 1)[1].split("?", 1)[0] if store.startswith("sqlite") and "///" in store else ""
    store_files = [os.path.abspath(sqlite_file) + suffix for suffix in ("", "-wal", "-shm", "-journal")
                   ] if sqlite_file else []
    deny = (settings.data_dir, str(settings.artifacts_dir), str(settings.models_dir), str(settings.auth_key_path),
            settings.jwt_secret_file, *store_files, settings.config_file)
    return SandboxSpec(
        deny=tuple(os.path.abspath(p) for p in deny if p),
        user=settings.sandbox_user,
        memory=settings.sandbox_memory,
        tasks=settings.sandbox_tasks,
        file_size=settings.max_upload_size + MIB,  # its private copy of an uploaded file
        reply_limit=2 * settings.max_upload_size + 64 * MIB,  # an ONNX conversion answers the graph
    )


@dataclass
class Upload:
    """What ``PUT /v2/models/{name}`` carries, once the file is staged."""

    artifact: Artifact
    filename: str | None = None
    library: str | None = None
    filetype: str | None = None
    is_public: bool | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    optimize: str | None = None


def check_name(name: str) -> str:
    if not NAME_RULE.fullmatch(name):
        raise ArgumentError(f"Invalid model name {name!r}: {NAME_HELP}", {"name": [NAME_HELP]})
    return name


def check_schema(name: str, value: Any) -> dict[str, Any] | None:
    """An input or output schema: a JSON Schema object (``input_schema`` with ``properties``)."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ArgumentError(f"{name} is not valid JSON: {exc}", {name: ["Not valid JSON."]}) from None
    if not isinstance(value, dict):
        raise ArgumentError(f"{name} must be a JSON object (a JSON Schema)", {name: ["Must be a JSON object."]})
    import jsonschema

    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ArgumentError(f"{name} is not a valid JSON Schema: {exc.message}", {name: [exc.message]}) from None
    if name == "input_schema" and not isinstance(value.get("properties"), dict):
        raise ArgumentError("input_schema must have 'properties': one entry per input column, in order",
                            {name: ["Must have 'properties'."]})
    return value


def columns_from_schema(schema: dict[str, Any]) -> list[Column]:
    kinds = {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean"}
    columns = []
    for name, prop in schema["properties"].items():
        prop = prop if isinstance(prop, dict) else {}
        columns.append(Column(name, kinds.get(prop.get("type"), "number"), prop.get("minimum"), prop.get("maximum"),
                              prop.get("enum"), prop.get("description")))
    return columns


def column_field(column: Column, required: bool) -> fields.Field:
    validators = []
    if column.minimum is not None or column.maximum is not None:
        validators.append(validate.Range(min=column.minimum, max=column.maximum))
    if column.choices:
        validators.append(validate.OneOf(column.choices))
    meta: dict[str, Any] = {"description": column.description} if column.description else {}
    if column.observed is not None:
        meta["x-observed-minimum"], meta["x-observed-maximum"] = column.observed
    kind = {"integer": fields.Int, "string": fields.Str, "boolean": fields.Bool}.get(column.type)
    if kind is None:
        return fields.Float(required=required, allow_nan=False, validate=validators, metadata=meta)
    return kind(required=required, validate=validators, metadata=meta)


def _ranges(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each numeric column's smallest and largest value in ``rows``."""
    ranges: dict[str, list[float]] = {}
    for column in rows[0] if rows else ():
        values = [row.get(column) for row in rows]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if numbers and len(numbers) == len(values) and min(numbers) < max(numbers):
            ranges[column] = [min(numbers), max(numbers)]
    return ranges


class RowsArguments:
    """``{"rows": [...]}``: many rows in one request, each checked like a single row."""

    accept = None
    has_files = False

    def __init__(self, name: str, columns: list[Column] | None) -> None:
        self.model = name
        self.method = "predict"
        self.accepted = [ROWS]
        self._single = (ArgumentSpec(name, "predict", {c.name: column_field(c, True) for c in columns})
                        if columns is not None else None)
        self._width = len(columns) if columns is not None else None

    @property
    def width(self) -> int | None:
        """How many values a row given as a list has (None: the model's own signature says)."""
        return self._width

    def load(self, sources: Any) -> dict[str, Any]:
        body = sources.json or {}
        unknown = sorted({*sources.query.keys(), *sources.form.keys(), *body.keys()} - {ROWS})
        if unknown or ROWS not in body:
            raise ArgumentError(
                "Send many rows as a JSON object {\"rows\": [...]} and nothing else"
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                {name: ["Unknown argument."] for name in unknown} or {ROWS: ["Missing data for required field."]},
                accepted=self.accepted)
        rows = body[ROWS]
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ROWS:
            raise ArgumentError(f"rows must be a list of 1 to {MAX_ROWS} rows", {ROWS: ["Must be a non-empty list."]})
        errors: dict[str, Any] = {}
        checked = []
        for index, row in enumerate(rows):
            try:
                checked.append(self._row(row, sources.lenient))
            except ArgumentError as exc:
                errors[str(index)] = exc.errors
            except ValueError as exc:
                errors[str(index)] = [str(exc)]
        if errors:
            first = next(iter(errors.items()))
            raise ArgumentError(f"Invalid rows for {self.model} predict: row {first[0]}: {first[1]}", {ROWS: errors})
        return {ROWS: checked}

    def _row(self, row: Any, lenient: bool) -> Any:
        if isinstance(row, dict):
            if self._single is None:
                raise ValueError("this model's inputs have no names: send each row as a list of values")
            return self._single.load(_JsonSources(row, lenient=lenient))
        if isinstance(row, list):
            if self._width is not None and len(row) != self._width:
                raise ValueError(f"has {len(row)} values; the model takes {self._width}")
            return row
        raise ValueError("each row is an object of inputs or a list of values")


@dataclass
class _JsonSources:
    json: dict[str, Any]
    query: Any = dataclasses.field(default_factory=dict)
    form: Any = dataclasses.field(default_factory=dict)
    files: Any = dataclasses.field(default_factory=dict)
    negotiated_accept: str | None = None
    lenient: bool = False


class Registry:
    """Uploaded models: their records, files, and servable versions."""

    def __init__(self, settings: Settings, db: Database, plugin_names: set[str]) -> None:
        self._settings = settings
        self._plugins = plugin_names
        self.store = RegistryStore(db)
        self._shared = db.shared  # replicas share the store: another may be loading a version right now
        self.artifacts = ArtifactStore(settings.artifacts_dir, settings.max_upload_size)
        config = WorkerConfig(model="registry", log_level=settings.log_level, environ=(
            (CAPACITY_ENV, str(settings.max_loaded_models)),
            (PRELOAD_ENV, "1" if settings.registry_preload else "0")),
            sandbox=sandbox_spec(settings) if settings.executor != "ray" else None)
        spec = ExecutorSpec(kind=settings.executor, workers=settings.registry_workers,
                            start_method=settings.start_method, poll_us=settings.worker_poll_us,
                            ray_address=settings.ray_address, ray_num_cpus=settings.ray_num_cpus,
                            ray_num_gpus=settings.ray_num_gpus)  # uploads on the Ray cluster too, with the global resources
        self.pool = make_shared_pool(HOST, config, spec, settings.max_loaded_models)
        self.frameworks: dict[str, Framework] = {}
        self.broken_frameworks: dict[str, str] = {}
        self._models: dict[str, ModelRecord] = {}
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._served: dict[tuple[str, int], ServedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._saved_predict: dict[str, float] = {}
        self._background = Background("registry")
        self._pool_started = False
        self.revision = 0  # grows at every change that the OpenAPI document shows
        self._catching: asyncio.Task | None = None  # a read of the store for a name not known here
        self._caught_at = 0.0

    # --- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.frameworks, self.broken_frameworks = discover_frameworks()
        for reason in self.broken_frameworks.values():
            LOG.error("registry: %s", reason)
        from ..containment.landlock import abi

        version = abi()
        if self._settings.executor == "ray" or version < 4:
            why = ("--executor ray runs them as Ray actors" if self._settings.executor == "ray"
                   else f"this kernel offers {'no Landlock' if not version else f'Landlock ABI {version} (4 needed)'}")
            LOG.warning("registry: the workers that load uploaded files cannot be contained (%s): %s", why,
                        "formats whose loading runs code (pickle, joblib, TorchScript) are served uncontained "
                        "(--allow-unconfined-code)" if self._settings.allow_unconfined_code else
                        f"uploads of formats whose loading runs code (pickle, joblib, TorchScript) are refused; "
                        f"{SAFE_FORMATS} are served")
        await asyncio.to_thread(lambda: self.artifacts.prepare(
            node_id(self._settings.data_dir) if self._shared else "local"))
        models, versions = await self.store.load()
        self._models = {m.name: m for m in models}
        for version in versions:
            self._versions.setdefault(version.model, {})[version.number] = version
            if version.status is VersionStatus.LOADING and not self._shared:  # we stopped during its first load
                version.status, version.error = VersionStatus.ERROR, "the server stopped while loading it; upload again"
                await self.store.save_version(version, "status", "error")
        self.revision += 1
        if self._models or (self._settings.registry_preload and self.frameworks):
            self.ensure_pool()  # else the shared workers start with the first upload
            LOG.info("registry: %d uploaded models", len(self._models))

    def ensure_pool(self) -> None:
        """Start the shared workers, once (in the background)."""
        if not self._pool_started:
            self._pool_started = True
            self._spawn(self._start_pool())

    async def _start_pool(self) -> None:
        try:
            await self.pool.start()
        except Exception as exc:  # every uploaded model is then unavailable, with this reason
            LOG.error("registry: the shared workers could not start: %s", exc)

    async def close(self) -> None:
        await self._background.cancel_all()
        for model in self._models.values():
            try:
                await self._save_last_predict(model, force=True)
            except StoreOutage:
                break  # a hint of use, not worth waiting for the store at shutdown
        for served in self._served.values():
            await served.stop(0)
        if self._pool_started:
            await self.pool.stop(self._settings.shutdown_timeout)

    def _spawn(self, coro: Any) -> asyncio.Task:
        return self._background.spawn(coro)

    async def refresh(self) -> None:
        """Take in what other replicas wrote to the store: models and versions created,
        changed (current version, public flag, archive, config, load status) or purged.
        What this server is writing itself (a name whose lock is held, a version it is
        loading) stays as it is here; the next refresh sees it settled."""
        for _ in range(5):
            before = self.store.writes
            models, versions = await self.store.load()
            if self.store.writes == before:  # no write of ours overlapped the read: apply it, without a pause
                break
        else:
            return  # writes all along: the next round
        changed = False
        busy = {name for name, lock in self._locks.items() if lock.locked()}
        theirs = {m.name: m for m in models if m.name not in busy}
        for name in [n for n in self._models if n not in theirs and n not in busy]:
            self._forget(name)
            changed = True
        for name, record in theirs.items():
            mine = self._models.get(name)
            if mine is None:
                self._models[name] = record
                changed = True
                continue
            last_predict = max(mine.last_predict or 0, record.last_predict or 0) or None
            if dataclasses.astuple(dataclasses.replace(record, last_predict=None)) != \
                    dataclasses.astuple(dataclasses.replace(mine, last_predict=None)):
                changed = True
            for field_name in MODEL_FIELDS:
                setattr(mine, field_name, getattr(record, field_name))
            mine.last_predict = last_predict
        for version in versions:
            if version.model not in theirs:
                continue
            mine_versions = self._versions.setdefault(version.model, {})
            mine = mine_versions.get(version.number)
            if mine is None:
                mine_versions[version.number] = version
                changed = True
            elif version.status is not VersionStatus.LOADING and version != mine:
                if (version.config, version.optimization, version.sha256) != (mine.config, mine.optimization,
                                                                              mine.sha256):
                    self._retire(version.model, version.number)
                mine_versions[version.number] = version
                changed = True
        if changed:
            self.revision += 1
            if self._models:
                self.ensure_pool()

    async def catch_up(self, name: str, also_known: bool = False) -> bool:
        """A model this replica does not know (or, ``also_known``, knows as it was a moment
        ago) may have been created or changed on another one (behind a balancer, the next
        request of its uploader lands here): read the store now rather than at the next poll.
        At most one read per CATCH_UP_INTERVAL, shared by every request that waits for it.
        Whether a read was made."""
        if not self._shared or (name in self._models and not also_known) or not NAME_RULE.fullmatch(name):
            return False
        now = time.monotonic()
        if self._catching is None or (self._catching.done() and now - self._caught_at >= CATCH_UP_INTERVAL):
            self._caught_at = now
            self._catching = asyncio.get_running_loop().create_task(self.refresh())
        try:
            await asyncio.shield(self._catching)
        except Exception:  # the store is away, or the read failed: the name is answered as it is known
            return False
        return True

    def _forget(self, name: str) -> None:
        """A model purged elsewhere: drop it here (its files went with the purge)."""
        self._models.pop(name, None)
        for number in self._versions.pop(name, {}):
            self._retire(name, number)

    def _retire(self, name: str, number: int) -> None:
        """Stop serving a version from its current ServedModel; in-flight calls finish on it."""
        old = self._served.pop((name, number), None)
        if old is not None:
            self._spawn(_stop_when_idle(old))

    # --- reading ----------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def models(self, deleted: bool = False) -> Iterator[ModelRecord]:
        """Uploaded models by name; archived ones only (``deleted``) or only the others."""
        return (m for name, m in sorted(self._models.items()) if (m.archived is not None) == deleted)

    def not_found(self, name: str) -> NotFound:
        """The answer for a model that is not served: the same on every route (it names the
        served models; the front door leaves out those the caller may not know of)."""
        from ..models import ModelNotFound

        return ModelNotFound(name, [*self._plugins, *(m.name for m in self.models())])

    def record(self, name: str, *, archived_ok: bool = False) -> ModelRecord:
        model = self._models.get(name)
        if model is None:
            raise self.not_found(name)
        if model.archived is not None and not archived_ok:
            raise ModelArchived(f"Model '{name}' is archived (since {stamp(model.archived)}); "
                                f"POST .../{name}/restore brings it back", details={"model": name, "archived": True})
        return model

    def versions(self, name: str) -> list[VersionRecord]:
        self.record(name, archived_ok=True)
        return [v for _, v in sorted(self._versions.get(name, {}).items())]

    def version(self, name: str, number: int) -> VersionRecord:
        self.record(name, archived_ok=True)
        version = self._versions.get(name, {}).get(number)
        if version is None:
            raise NotFound(f"Model '{name}' has no version {number}", details={"model": name, "version": number})
        return version

    def current(self, name: str) -> VersionRecord | None:
        model = self._models[name]
        return self._versions.get(name, {}).get(model.current_version) if model.current_version else None

    async def served(self, name: str, number: int | None = None) -> ServedModel:
        """The servable model of a version (the current one by default), started on first use.
        With replicas, a model or version this one does not have (or not yet ready) is looked
        for in the store before the answer says so: it may have been made a moment ago."""
        try:
            return await self._served_now(name, number)
        except (NotFound, Conflict):
            if not self._shared or not await self.catch_up(name, also_known=True):
                raise
        return await self._served_now(name, number)

    async def _served_now(self, name: str, number: int | None) -> ServedModel:
        model = self.record(name)
        if number is None:
            if model.current_version is None:
                raise Conflict(f"Model '{name}' has no version that loads; upload one",
                               details={"model": name, "versions": len(self._versions.get(name, {}))})
            number = model.current_version
        version = self.version(name, number)
        if version.status is not VersionStatus.READY:
            raise Conflict(f"Version {number} of model '{name}' is not servable: {version.error or version.status}",
                           details={"model": name, "version": number, "status": version.status})
        return await self._serve(model, version)

    def note_predict(self, name: str) -> None:
        model = self._models.get(name)
        if model is not None:
            model.last_predict = time.time()
            if model.last_predict - self._saved_predict.get(name, 0.0) >= LAST_PREDICT_SAVE_INTERVAL:
                self._spawn(self._save_last_predict(model))

    async def _save_last_predict(self, model: ModelRecord, force: bool = False) -> None:
        if model.last_predict is not None and (force or model.last_predict != self._saved_predict.get(model.name)):
            self._saved_predict[model.name] = model.last_predict
            await self.store.save_model(model, "last_predict")

    # --- serving a version ------------------------------------------------------------

    def _columns(self, version: VersionRecord) -> tuple[list[Column] | None, bool]:
        """The version's input columns (with the range its reference dataset covers), and
        whether they are the model's own names."""
        columns, named = self._declared_columns(version)
        observed = (version.config.get("dataset") or {}).get("ranges") or {}
        if columns is not None and observed:
            columns = [dataclasses.replace(c, observed=tuple(observed[c.name]))
                       if isinstance(observed.get(c.name), list) else c for c in columns]
        return columns, named

    def _declared_columns(self, version: VersionRecord) -> tuple[list[Column] | None, bool]:
        schema = version.config.get("input_schema")
        if schema:
            return columns_from_schema(schema), True
        signature = Signature.from_json(version.signature or {})
        if signature.columns is not None:
            return signature.columns, True
        if signature.n_inputs:
            return [Column(f"x{i}") for i in range(signature.n_inputs)], False
        return None, False

    def _target(self, version: VersionRecord, columns: list[Column] | None, named: bool) -> Target:
        optimized = version.optimization or {}
        sha, filetype, library = version.sha256, version.filetype, version.library
        if optimized.get("serving") == "onnx":
            sha, filetype, library = optimized["onnx_sha256"], "onnx", "onnx"
        return Target(
            key=f"{sha}:{filetype}",
            model=version.model,
            path=str(self.artifacts.path(sha)),
            library=library,
            filetype=filetype,
            columns=tuple(c.name for c in columns) if columns is not None else None,
            output_schema=version.config.get("output_schema"),
            contained_only=self.runs_code(library, filetype) and not self._settings.allow_unconfined_code,
        )

    async def _serve(self, model: ModelRecord, version: VersionRecord) -> ServedModel:
        served = self._served.get((model.name, version.number))
        if served is None:
            target = self._target(version, None, False)
            await self.check_code_servable(model.name, target.library, target.filetype)
            served = self._served.get((model.name, version.number))  # another call may have built it meanwhile
        if served is None:
            self.ensure_pool()
            served = self._served[(model.name, version.number)] = self._build(model, version)
            await served.start()
        return served

    def described(self, name: str) -> ServedModel | None:
        """The current version of ``name`` as the API documents it (not started), if any."""
        model = self._models[name]
        current = self.current(name)
        return self._build(model, current) if current is not None else None

    def _build(self, model: ModelRecord, version: VersionRecord) -> ServedModel:
        """A version's ServedModel: its arguments, its queue, the pool (started with it)."""
        columns, named = self._columns(version)
        target = self._target(version, columns, named)
        view = self.pool.view(target)
        options = self._settings.for_model(model.name)
        batching = {k: v for k, v in (version.config.get("batching") or {}).items() if k in BATCHING}
        if batching:
            options = dataclasses.replace(options, **batching)
        with legacy_vocabulary_allowed():
            single = ArgumentSpec(model.name, "predict",
                                  {c.name: column_field(c, True) for c in columns} if columns else {})
            train = ArgumentSpec(model.name, "train", {})
        served = ServedModel(
            name=model.name,
            methods=frozenset({"predict", "predict_batch"}),
            predict_args=single,
            train_args=train,
            response_schema=None,
            metadata={"version": version.number, "library": version.library, "filetype": version.filetype},
            options=options,
            runner=view,  # type: ignore[arg-type]
            dispatcher=Dispatcher(view, options, has_predict_batch=True),  # type: ignore[arg-type]
            rows_args=RowsArguments(model.name, columns),
            on_predict=self.note_predict,
        )
        return served

    async def _probe(self, model: ModelRecord, version: VersionRecord) -> None:
        """Load the version once in a worker: its signature, or why it does not load."""
        self.ensure_pool()
        served = self._build(model, version)
        try:
            await served.start()
            outcome = await served.dispatcher.call("describe", {}, admit=False)
            if not isinstance(outcome, Ok):
                raise unwrap_error(outcome, model.name)
            version.signature = outcome.value
            version.status, version.error = VersionStatus.READY, None
        except DeepaasError as exc:
            version.status, version.error = VersionStatus.ERROR, exc.message
        finally:
            await served.stop(0)

    async def _optimize(self, model: ModelRecord, version: VersionRecord) -> None:
        """``optimize=onnx``: convert, compare on a probe set, serve the graph if they agree."""
        columns, named = self._columns(version)
        width = len(columns) if columns is not None else None
        report: dict[str, Any] = {"requested": "onnx", "serving": "original"}
        if not width:
            report["reason"] = "the model's input width is unknown, so no probe set can be made"
            version.optimization = report
            return
        rng = random.Random(int(version.sha256[:8], 16))
        probe = [[round(rng.gauss(0, 3), 4) for _ in range(width)] for _ in range(PROBE_ROWS)]
        original = self._build(model, version)
        try:
            await original.start()
            outcome = await original.dispatcher.call("to_onnx", {"probe": probe}, admit=False)
            if not isinstance(outcome, Ok):
                raise unwrap_error(outcome, model.name)
            graph = outcome.value.get("onnx") if isinstance(outcome.value, dict) else None
            if not isinstance(graph, str):
                raise DeepaasError("the worker answered no ONNX graph")
            try:
                converted = await self.artifacts.save(_chunks(base64.b64decode(graph, validate=True)))
            except ValueError:
                raise DeepaasError("the worker answered an ONNX graph that is not base64") from None
            report["onnx_sha256"] = converted.sha256
            onnx_version = dataclasses.replace(version, optimization={"serving": "onnx",
                                                                      "onnx_sha256": converted.sha256})
            candidate = self._build(model, onnx_version)
            try:
                await candidate.start()
                answer = await candidate.dispatcher.call("predict", {ROWS: probe}, admit=False)
                if not isinstance(answer, Ok):
                    raise unwrap_error(answer, model.name)
            finally:
                await candidate.stop(0)
            try:  # what the worker answered is checked here, not trusted
                report.update(agreement(outcome.value["original"], answer.value))
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                raise DeepaasError(f"the answers cannot be compared: {type(exc).__name__}") from None
            if report["labels_agree"] == 1.0 and report["max_probability_difference"] <= AGREEMENT_TOLERANCE:
                report["serving"] = "onnx"
            else:
                report["reason"] = (f"the ONNX graph disagrees with the original on the probe set "
                                    f"(tolerance {AGREEMENT_TOLERANCE:g})")
        except DeepaasError as exc:
            report["reason"] = f"conversion failed: {exc.message}"
        finally:
            await original.stop(0)
        version.optimization = report

    # --- writing ----------------------------------------------------------------------

    def discard(self, artifact: Artifact) -> None:
        """Drop the file of a refused upload: staged, or committed and used by no version."""
        if artifact.staged is not None:
            self.artifacts.discard(artifact)
        else:
            self.discard_unused(artifact.sha256)

    def discard_unused(self, sha256: str) -> None:
        """Remove a stored file that no version refers to (an upload refused after it was stored).

        Not with a shared store: another replica may be recording the same bytes right now,
        and its version would lose its file. Uploads are committed only once they are
        checked, so what stays is a race's loser (two uploads of one name at once)."""
        if self._shared:
            return
        if not any(sha256 in _files(v) for versions in self._versions.values() for v in versions.values()):
            self.artifacts.delete(sha256)

    def check_writable(self, name: str) -> None:
        """The registry changes uploaded models only: a plugin's name is a 409."""
        if name in self._plugins:
            raise Conflict(f"'{name}' is the name of a plugin served here; the registry manages uploaded models "
                           "only (upload under another name)", details={"model": name, "source": "plugin"})

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def runs_code(self, library: str, filetype: str) -> bool:
        """Whether loading a file of this library and type may run code its author wrote."""
        framework = self.frameworks.get(library)
        return framework is None or framework.runs_code(filetype)

    async def check_code_servable(self, name: str, library: str, filetype: str) -> None:
        """A format whose loading runs code is loaded only by contained workers (or with
        --allow-unconfined-code): else a 403 saying why and what to upload instead."""
        if not self.runs_code(library, filetype) or self._settings.allow_unconfined_code:
            return
        if self._settings.executor != "ray":
            self.ensure_pool()
            await self.pool.started.wait()
            if self.pool.contains_code:
                return
        raise CodeRefused(
            f"Refused: loading a {filetype} file runs code, and this server cannot contain the workers that "
            f"would load it ({self.pool.containment_summary()}). Upload the model as {SAFE_FORMATS}, or start "
            "the server with --allow-unconfined-code", details={"model": name, "filetype": filetype})

    def identify(self, upload: Upload) -> tuple[str, str]:
        """The upload's library and filetype: as given, checked against the bytes, or inferred."""
        head, name = upload.artifact.head, upload.filename or ""
        filetype, library = canonical(upload.filetype, FILETYPE_ALIASES), canonical(upload.library, LIBRARY_ALIASES)
        if library is not None and library not in LIBRARIES:
            raise ArgumentError(f"Unknown library {library!r}; one of: {', '.join(LIBRARIES)}",
                                {"library": [f"Must be one of: {', '.join(LIBRARIES)}."]})
        if filetype is not None and filetype not in FILETYPES:
            raise ArgumentError(f"Unknown filetype {filetype!r}; one of: {', '.join(FILETYPES)}",
                                {"filetype": [f"Must be one of: {', '.join(FILETYPES)}."]})
        if filetype is None:
            found = {t for fw in self.frameworks.values() if (t := fw.sniff(head, name)) is not None}
            if library is not None:
                found &= set(LIBRARIES[library])
            if len(found) != 1:
                what = f"it could be {' or '.join(sorted(found))}" if found else "its name and first bytes say nothing"
                raise ArgumentError(f"Cannot tell the file's type ({what}); give filetype: one of "
                                    f"{', '.join(LIBRARIES.get(library or '', FILETYPES))}",
                                    {"filetype": ["Required for this file."]})
            filetype = found.pop()
        expected = FILETYPES[filetype]
        if library is not None and library != expected:
            raise ArgumentError(f"filetype {filetype} is a {expected} format, not {library}",
                                {"library": [f"{filetype} files are {expected} models."]})
        framework = self.frameworks.get(expected)
        if framework is None:
            reason = self.broken_frameworks.get(expected) or (
                f"no framework plugin for {expected} is installed (pip install -e plugins/frameworks)")
            raise ArgumentError(f"{filetype} files cannot be served here: {reason}", {"library": [reason]})
        reason = framework.check(head, filetype)
        if reason:
            raise ArgumentError(f"The file is not a {filetype} file: {reason}", {"filetype": [reason]})
        return expected, filetype

    async def upload(self, name: str, upload: Upload, owner: str | None = None, may_publish: bool = False,
                     may_add_version: Callable[[], None] | None = None) -> tuple[bool, ModelRecord, VersionRecord]:
        """Record the stored file as the next version of ``name`` and load it once.

        Returns whether the model was created. A version that does not load is kept,
        with status ``error`` and the reason, and the current version stays. ``is_public``
        is the new model's; an existing model's changes only with ``may_publish`` (its
        owner uploads). ``may_add_version`` raises if the caller may not add a version to the
        model as it is when the version is recorded (someone else may have created it meanwhile).
        """
        check_name(name)
        self.check_writable(name)
        library, filetype = self.identify(upload)
        await self.check_code_servable(name, library, filetype)
        if upload.optimize is not None and upload.optimize not in OPTIMIZATIONS:
            raise ArgumentError(f"optimize must be one of: {', '.join(OPTIMIZATIONS)}",
                                {"optimize": [f"Must be one of: {', '.join(OPTIMIZATIONS)}."]})
        now = time.time()
        async with self._lock(name):
            model = self._models.get(name)
            created = model is None
            if model is None:
                model = ModelRecord(name, created=now, updated=now, is_public=bool(upload.is_public),
                                    description=upload.description or "", owner=owner)
                try:
                    await self.store.insert_model(model)
                except sa.exc.IntegrityError:
                    raise _raced(name) from None
                self._models[name] = model
            elif may_add_version is not None:
                may_add_version()
            if not created and model.archived is not None:
                raise ModelArchived(f"Model '{name}' is archived; restore it before uploading a new version",
                                    details={"model": name, "archived": True})
            versions = self._versions.setdefault(name, {})
            upload.artifact = await asyncio.to_thread(self.artifacts.commit, upload.artifact)
            config = {k: v for k, v in (("input_schema", upload.input_schema),
                                        ("output_schema", upload.output_schema)) if v is not None}
            version = VersionRecord(name, max(versions, default=0) + 1, upload.artifact.sha256, upload.artifact.size,
                                    library, filetype, upload.filename, now, config=config)
            try:
                await self.store.insert_version(version)
            except sa.exc.IntegrityError:
                raise _raced(name) from None
            versions[version.number] = version
        await self._probe(model, version)
        if version.status is VersionStatus.READY and upload.optimize:
            await self._optimize(model, version)
        async with self._lock(name):
            await self.store.save_version(version, "status", "error", "signature", "optimization")
            changes = ["updated"]
            model.updated = time.time()
            if version.status is VersionStatus.READY and (model.current_version or 0) < version.number:
                model.current_version = version.number
                changes.append("current_version")
            if not created:
                for field_name, value in (("is_public", upload.is_public if may_publish else None),
                                          ("description", upload.description)):
                    if value is not None:
                        setattr(model, field_name, value)
                        changes.append(field_name)
            await self.store.save_model(model, *changes)
            self.revision += 1
        LOG.info("model %s: version %d uploaded (%s, %s, %d bytes): %s%s", name, version.number, library, filetype,
                 version.size, version.status, f" ({version.error})" if version.error else "")
        return created, model, version

    async def update(self, name: str, *, current_version: int | None = None, is_public: bool | None = None,
                     description: str | None = None) -> ModelRecord:
        model = self.record(name)
        async with self._lock(name):
            changes = []
            if current_version is not None:
                version = self.version(name, current_version)
                if version.status is not VersionStatus.READY:
                    raise Conflict(f"Version {current_version} of model '{name}' is {version.status}"
                                   f"{f': {version.error}' if version.error else ''}; only a ready version can serve",
                                   details={"model": name, "version": current_version, "status": version.status})
                model.current_version = current_version
                changes.append("current_version")
            if is_public is not None:
                model.is_public = is_public
                changes.append("is_public")
            if description is not None:
                model.description = description
                changes.append("description")
            model.updated = time.time()
            await self.store.save_model(model, "updated", *changes)
            self.revision += 1
        return model

    async def set_config(self, name: str, number: int, config: dict[str, Any]) -> VersionRecord:
        """Replace a version's input schema, output schema and batching; the next calls use them."""
        self.record(name)
        version = self.version(name, number)
        checked = {
            "input_schema": check_schema("input_schema", config.get("input_schema")),
            "output_schema": check_schema("output_schema", config.get("output_schema")),
            "batching": check_batching(config.get("batching")),
        }
        unknown = sorted(set(config) - set(checked))
        if unknown:
            raise ArgumentError(f"Unknown config keys: {', '.join(unknown)}; known: {', '.join(checked)}",
                                {k: ["Unknown key."] for k in unknown})
        async with self._lock(name):
            dataset = version.config.get("dataset")
            version.config = {k: v for k, v in checked.items() if v}
            if dataset:
                version.config["dataset"] = dataset
            await self.store.save_version(version, "config")
            self._retire(name, number)
            self.revision += 1
        return version

    async def set_dataset(self, name: str, number: int, data: bytes, rows: list[dict[str, Any]]) -> VersionRecord:
        """Keep a CSV of sample rows with a version: model tests and feature impact use it by default."""
        self.record(name)
        version = self.version(name, number)
        artifact = await self.artifacts.save(_chunks(data))
        async with self._lock(name):
            version.config = {**version.config, "dataset": {
                "sha256": artifact.sha256, "rows": len(rows), "columns": list(rows[0]) if rows else [],
                "ranges": _ranges(rows)}}
            await self.store.save_version(version, "config")
            self._retire(name, number)  # its arguments now say what range the dataset covers
            self.revision += 1
        return version

    def dataset_path(self, name: str, number: int) -> Any:
        dataset = self.version(name, number).config.get("dataset")
        if not dataset:
            raise NotFound(f"Version {number} of model '{name}' has no reference dataset",
                           details={"model": name, "version": number})
        return self.artifacts.path(dataset["sha256"])

    def dataset_rows(self, name: str) -> list[dict[str, Any]] | None:
        """The rows of the current version's reference dataset, if it has one."""
        from ..quality.samples import rows_from_csv

        current = self.current(name)
        dataset = current.config.get("dataset") if current is not None else None
        return rows_from_csv(self.artifacts.path(dataset["sha256"]).read_bytes()) if dataset else None

    async def archive(self, name: str) -> ModelRecord:
        model = self.record(name)
        model.archived = model.updated = time.time()
        await self.store.save_model(model, "archived", "updated")
        self.revision += 1
        return model

    async def restore(self, name: str) -> ModelRecord:
        model = self.record(name, archived_ok=True)
        if model.archived is None:
            raise Conflict(f"Model '{name}' is not archived", details={"model": name})
        model.archived, model.updated = None, time.time()
        await self.store.save_model(model, "archived", "updated")
        self.revision += 1
        return model

    async def purge(self, name: str) -> None:
        """Delete the model, its versions, and the files no other version uses."""
        self.record(name, archived_ok=True)
        async with self._lock(name):
            versions = self._versions.pop(name, {})
            del self._models[name]
            await self.store.purge(name)
            for number in versions:
                self._retire(name, number)
            still_used = {s for vs in self._versions.values() for v in vs.values() for s in _files(v)}
            for version in versions.values():
                for sha in _files(version):
                    if sha not in still_used:
                        await asyncio.to_thread(self.artifacts.delete, sha)
            self.revision += 1


def _raced(name: str) -> Conflict:
    """Another replica created the model, or its next version, at the same moment."""
    return Conflict(f"Model '{name}' was being written by another replica at the same moment; upload again",
                    details={"model": name})


BATCHING = ("max_batch_size", "max_batch_time_ms", "predict_timeout")


def check_batching(value: Any) -> dict[str, Any] | None:
    if value in (None, {}):
        return None
    if not isinstance(value, dict):
        raise ArgumentError("batching must be an object", {"batching": ["Must be an object."]})
    errors = {}
    for key, item in value.items():
        if key not in BATCHING:
            errors[key] = [f"Unknown; one of: {', '.join(BATCHING)}."]
        elif not isinstance(item, (int, float)) or isinstance(item, bool) or item < 0 or (
                key == "max_batch_size" and (item < 1 or int(item) != item)):
            errors[key] = ["Must be a non-negative number (max_batch_size: an integer of at least 1)."]
    if errors:
        raise ArgumentError(f"Invalid batching config: {', '.join(errors)}", {"batching": errors})
    return value


def agreement(original: list[dict[str, Any]], converted: list[dict[str, Any]]) -> dict[str, Any]:
    """How far two models' answers on the same rows agree: labels, and probabilities."""
    same = sum(1 for a, b in zip(original, converted) if a.get("label", a.get("value")) == b.get("label", b.get("value")))
    worst = 0.0
    for a, b in zip(original, converted):
        for cls, p in (a.get("probabilities") or {}).items():
            worst = max(worst, abs(p - (b.get("probabilities") or {}).get(cls, float("nan"))))
        if "value" in a and "value" in b:
            worst = max(worst, abs(a["value"] - b["value"]))
    return {"probe_rows": len(original), "labels_agree": same / max(1, len(original)),
            "max_probability_difference": worst, "tolerance": AGREEMENT_TOLERANCE}


def unwrap_error(outcome: Any, name: str) -> DeepaasError:
    try:
        unwrap(outcome, name, "load")
    except DeepaasError as exc:
        return exc
    return DeepaasError("unexpected outcome")


def _files(version: VersionRecord) -> list[str]:
    optimized = (version.optimization or {}).get("onnx_sha256")
    dataset = (version.config.get("dataset") or {}).get("sha256")
    return [version.sha256, *([optimized] if optimized else []), *([dataset] if dataset else [])]


async def _stop_when_idle(served: ServedModel, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while served.waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await served.stop(0)


async def _chunks(data: bytes) -> Any:
    yield data


def version_href(base: str, name: str, number: int) -> str:
    return f"{base}/v2/models/{name}/versions/{number}"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["Registry", "Upload", "ModelArchived", "check_name", "check_schema", "ModelState"]
