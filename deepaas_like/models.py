"""A served model: the plugin, its declared arguments and schema, and how it runs.

Layers, from here down: :class:`ServedModel` → its :class:`~deepaas_like.engine.dispatch.Dispatcher`
(the one queue of its calls) → a :mod:`runner <deepaas_like.engine.runners>` (worker processes
or threads) → the worker. A training runs beside the runner, in a process of its own
(:class:`~deepaas_like.engine.training.TrainingRun`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import marshmallow

from .arguments import ArgumentSources, ArgumentSpec
from .arguments.portable import fields_from_description, response_schema_from_description, unportable
from .engine.adapter import ModelAdapter
from .engine.calls import CallFailure, Ok, Outcome, failure_from_exception, unwrap
from .engine.dispatch import Dispatcher
from .engine.executors import Executor, ExecutorSpec, make_executor
from .engine.process import WorkerLauncher, WorkerStartFailed, mp_context
from .engine.training import TrainingRun
from .engine.worker import EnvironmentLaunch, WorkerConfig
from .errors import DeepaasError, ModelUnavailable, NotFound, PluginLoadError
from .jsonutil import dumps_bytes, to_jsonable
from .legacy import legacy_vocabulary_allowed
from .loading import LoadedPlugin, PluginRef
from .settings import ModelSettings
from .settings.sections import EngineSection

LOG = logging.getLogger(__name__)
PLUGIN_METHODS = ("get_metadata", "warm", "predict", "predict_batch", "train")


class ModelState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class ModelNotFound(NotFound):
    """A model that is not served; the message names the ones that are."""

    def __init__(self, name: str, served: list[str]) -> None:
        served = sorted(served)
        super().__init__(
            f"Model '{name}' not found. Served models: {', '.join(served) or '(none)'}", details={"models": served}
        )
        self.name, self.served = name, served

    def seen_by(self, sees: Callable[[str], bool]) -> ModelNotFound:
        """The same answer naming only the models ``sees`` lets the caller know of."""
        return ModelNotFound(self.name, [m for m in self.served if sees(m)])


@dataclass(eq=False)
class ServedModel:
    """One model as the API sees it: its declarations, metadata, state and engine.

    A plugin is one; so is each version of an uploaded model (served by the registry's
    shared workers). ``methods`` are the plugin methods it has (``predict``, ``train``,
    ``get_metadata``...); ``launcher`` starts processes of it, for trainings.
    """

    name: str
    methods: frozenset[str]
    predict_args: ArgumentSpec
    train_args: ArgumentSpec
    response_schema: type[marshmallow.Schema] | None
    metadata: dict[str, Any]
    options: ModelSettings
    runner: Executor
    dispatcher: Dispatcher
    launcher: WorkerLauncher | None = None
    metadata_error: str | None = None
    rows_args: Any = None  # uploaded models: the arguments of a request with many "rows"
    on_predict: Callable[[str], None] | None = None  # told the model's name at each prediction
    state: ModelState = ModelState.STARTING
    error: str | None = None
    version: int = 1  # a plugin: the version of its storage_dir() its workers serve (jobs/versions.py)
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    _validator: marshmallow.Schema | None = None
    _encoded: dict[str, bytes] = field(default_factory=dict)  # document() as JSON, by href

    def response_validator(self) -> marshmallow.Schema:
        """A (cached) instance of the response schema, for validating predictions."""
        if self._validator is None:
            assert self.response_schema is not None
            with legacy_vocabulary_allowed():
                self._validator = self.response_schema()
        return self._validator

    def has(self, method: str) -> bool:
        return method in self.methods

    @property
    def can_predict(self) -> bool:
        return self.has("predict")

    @property
    def can_train(self) -> bool:
        return self.has("train") and self.launcher is not None

    @property
    def is_ready(self) -> bool:
        """Warm, and a worker is alive to serve it."""
        return self.state is ModelState.READY and self.runner.ready

    @property
    def waiting(self) -> int:
        """Calls waiting for a worker (the queue depth)."""
        return self.dispatcher.waiting

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the runner (warming the model); failures are recorded, not raised."""
        try:
            await self.runner.start()
            self.dispatcher.start()
        except WorkerStartFailed as exc:
            self.state, self.error = ModelState.FAILED, f"could not start the model: {exc}"
            detail = exc.failure.traceback if exc.failure is not None else ""
            LOG.error("model %s: %s\n%s", self.name, self.error, detail)
        else:
            await self.refresh_metadata()
            self.state = ModelState.READY
            LOG.info("model %s is ready (%s executor)", self.name, self.runner.kind)
        finally:
            self._settled.set()

    async def wait_ready(self) -> None:
        """Wait while the model warms up; 503 if it could not start or is stopping."""
        if self.state is ModelState.STARTING:
            await self._settled.wait()
        if self.state is not ModelState.READY:
            raise ModelUnavailable(
                f"Model '{self.name}' is not available: {self.error or self.state}",
                retry_after=5,
                model=self.name,
            )

    async def stop(self, timeout: float) -> None:
        self.state = ModelState.STOPPED
        self._settled.set()
        await self.dispatcher.stop()
        await self.runner.stop(timeout)

    # --- calls -------------------------------------------------------------------------

    def predict_arguments(self, sources: ArgumentSources) -> ArgumentSpec:
        """The argument declaration a predict request is checked against."""
        if self.rows_args is not None and sources.json and "rows" in sources.json:
            return self.rows_args
        return self.predict_args

    async def predict(
        self,
        kwargs: Mapping[str, Any],
        *,
        admit: bool = True,
        background: bool = False,
        on_start: Callable[[], None] | None = None,
    ) -> Any:
        """One prediction through the model's queue (batched when batching is on): the one way
        every caller predicts (a request, an asynchronous prediction, the protocol's infer,
        model tests, feature impact), so that each is counted and bookkept alike.

        ``admit``: refuse with 503 when the queue is too long (requests); ``background``: run
        when no other call waits (asynchronous predictions); ``on_start``: told when it runs."""
        await self.wait_ready()
        if self.on_predict is not None:
            self.on_predict(self.name)
        outcome = await self.dispatcher.call("predict", kwargs, admit=admit, background=background, on_start=on_start)
        return unwrap(outcome, self.name, "predict")

    async def predict_rows(self, rows: list[Any], *, admit: bool = True) -> list[Any]:
        """Every row's answer, each row validated leniently (JSON numbers for strings, as the
        protocol's tensors and sample files give them): an uploaded model takes all the rows
        in one call; a plugin one call per row, which its queue hands over in groups
        (``predict_batch`` when batching). The one way many rows are predicted (the
        protocol's infer, model tests, feature impact)."""
        if self.rows_args is not None:
            kwargs = self.rows_args.load(ArgumentSources(json={"rows": rows}, lenient=True))
            return list(await self.predict(kwargs, admit=admit))
        each = [self.predict_args.load(ArgumentSources(json=row, lenient=True)) for row in rows]
        if len(each) == 1:  # the common case: no task to make and gather
            return [await self.predict(each[0], admit=admit)]
        return list(await asyncio.gather(*(self.predict(k, admit=admit) for k in each)))

    def new_training(
        self, *, log_file: str | None = None, on_progress: Callable[[float, str | None], None] | None = None
    ) -> TrainingRun:
        """A training of this model in a process of its own (see :class:`TrainingRun`)."""
        assert self.launcher is not None, "only plugins train"
        elsewhere = self.runner.new_training(log_file=log_file, on_progress=on_progress)  # e.g. a Ray task
        return elsewhere or TrainingRun(self.launcher, log_file=log_file, on_progress=on_progress)

    async def reload(self) -> None:
        """Serve every later call with a freshly warmed model (after a training, or a switch
        of version): fresh workers warm first, the old ones serve until then."""
        await self.runner.reload()
        await self.refresh_metadata()

    def serve_version(self, number: int) -> None:
        """Say that the workers serve version ``number`` of the storage_dir (the document shows it)."""
        if number != self.version:
            self.version = number
            self._encoded.clear()

    async def refresh_metadata(self) -> None:
        """Ask a warm worker for get_metadata() (after start and after each training).

        The copy of the plugin in the server process is never warmed in process mode,
        so the serving model itself is the one that knows, e.g., its trained version.
        A failure keeps the metadata known so far and shows the error in the document.
        """
        if self.has("get_metadata"):
            self._take_metadata(await self.dispatcher.call("get_metadata", {}, admit=False))

    def _take_metadata(self, outcome: Outcome) -> None:
        self._encoded.clear()
        if isinstance(outcome, Ok):
            try:
                self.metadata, self.metadata_error = checked_metadata(outcome.value), None
                return
            except (TypeError, ValueError) as exc:
                outcome = CallFailure(type(exc).__name__, str(exc))
        failure = outcome.explained if isinstance(outcome, CallFailure) else str(getattr(outcome, "error", outcome))
        error = f"get_metadata() failed: {failure}"
        if error != self.metadata_error:  # the traceback once, not at every refresh
            LOG.warning(
                "model %s: %s; serving it with the metadata known so far\n%s",
                self.name,
                error,
                getattr(outcome, "traceback", ""),
            )
        self.metadata_error = error

    def document(self, href: str) -> dict[str, Any]:
        """The model's entry in ``GET /v2/models/`` (DEEPaaS's shape)."""
        doc: dict[str, Any] = {"id": self.name, "name": self.name, "links": [{"rel": "self", "href": href}]}
        doc.update(self.metadata)
        doc["source"] = "plugin"
        doc["current_version"] = self.version
        if self.metadata_error:
            doc["metadata_error"] = self.metadata_error
        return doc

    def encoded_document(self, href: str, extra: Callable[[], dict[str, Any]] | None = None) -> bytes:
        """:meth:`document` (with what ``extra`` adds) as JSON, encoded once per change of the metadata."""
        encoded = self._encoded.get(href)
        if encoded is None:
            encoded = self._encoded[href] = dumps_bytes({**self.document(href), **(extra() if extra else {})})
        return encoded


class ModelSet(Mapping[str, ServedModel]):
    """The served plugins by name, and (``uploads``) the registry of uploaded models.

    Iterating gives the plugins; :meth:`servable` finds either kind.
    """

    def __init__(self, models: Mapping[str, ServedModel], broken: Mapping[str, Any] | None = None) -> None:
        self._models = dict(models)
        # Installed plugins that could not be loaded (name -> PluginLoadError): listed as failed,
        # their routes answering 503 with the error.
        self.broken: dict[str, Any] = dict(broken or {})
        self.uploads: Any = None  # a deepaas_like.registry.service.Registry once the app has one

    def __getitem__(self, name: str) -> ServedModel:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:  # Mapping's own goes through __getitem__ and KeyError
        return name in self._models

    def get_model(self, name: str) -> ServedModel:
        """A plugin by name (404 naming the served ones otherwise; 503 for a broken one)."""
        try:
            return self._models[name]
        except KeyError:
            raise self._not_found(name) from None

    def failed(self, name: str) -> ModelUnavailable:
        """The answer for a plugin that could not be loaded: 503 with its error."""
        error = self.broken[name]
        return ModelUnavailable(
            f"Model '{name}' could not be loaded: {error.reason}",
            retry_after=60,
            model=name,
            state="failed",
            error=error.reason,
        )

    def broken_document(self, name: str, href: str) -> dict[str, Any]:
        """A broken plugin's entry in ``GET /v2/models/``."""
        return {
            "id": name,
            "name": name,
            "source": "plugin",
            "state": "failed",
            "error": self.broken[name].reason,
            "links": [{"rel": "self", "href": href}],
        }

    def _not_found(self, name: str) -> DeepaasError:
        if name in self.broken:
            return self.failed(name)
        if self.uploads is not None:
            return self.uploads.not_found(name)
        return ModelNotFound(name, list(self._models))

    def is_uploaded(self, name: str) -> bool:
        return name not in self._models and self.uploads is not None and name in self.uploads

    async def servable(self, name: str, version: int | None = None) -> ServedModel:
        """A plugin, or a version (by default the current one) of an uploaded model."""
        plugin = self._models.get(name)
        if plugin is not None and version in (None, plugin.version):
            return plugin  # a plugin serves one version at a time, its current one
        if self.is_uploaded(name):
            return await self.uploads.served(name, version)
        if plugin is not None:
            raise NotFound(
                f"Model '{name}' is a plugin: it serves one version at a time, and that one version is "
                f"{plugin.version} (PATCH /v2/models/{name} with current_version serves another it kept)",
                details={"model": name, "versions": [str(plugin.version)]},
            )
        raise self._not_found(name)

    def check_known(self, name: str) -> None:
        """404 unless ``name`` is a plugin or an uploaded model (archived ones too; 503 for a broken plugin)."""
        if name not in self._models and not self.is_uploaded(name):
            raise self._not_found(name)


def checked_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"get_metadata() must return a dict, not {type(metadata).__name__}")
    return to_jsonable(dict(metadata))


def fallback_metadata(name: str, error: str | None) -> dict[str, Any]:
    if error is None:
        return {"description": f"Model '{name}' provides no get_metadata()"}
    return {"description": f"Model '{name}': the plugin's get_metadata() failed, so its own metadata is not shown"}


def _declared(adapter: ModelAdapter, method: str) -> Any:
    return adapter.call(method) if adapter.has(method) else {}


def response_schema_of(obj: Any) -> type[marshmallow.Schema] | None:
    schema = getattr(obj, "schema", None)
    if schema is None:
        return None
    if isinstance(schema, Mapping):
        return marshmallow.Schema.from_dict(dict(schema), name="ModelPredictionResponse")
    if isinstance(schema, type) and issubclass(schema, marshmallow.Schema):
        return schema
    raise TypeError(f"'schema' must be a marshmallow Schema class or a dict of fields, not {type(schema).__name__}")


def _initial_metadata(name: str, adapter: ModelAdapter) -> tuple[dict[str, Any], str | None]:
    """The plugin's metadata read in the server process; a failure is served, not fatal."""
    if not adapter.has("get_metadata"):
        return fallback_metadata(name, None), None
    try:
        with legacy_vocabulary_allowed():
            return checked_metadata(adapter.call("get_metadata")), None
    except Exception as exc:
        error = f"get_metadata() failed: {failure_from_exception(exc).explained}"
        LOG.warning("model %s: %s; serving it with fallback metadata\n%s", name, error, traceback.format_exc())
        return fallback_metadata(name, error), error


def build_model(plugin: LoadedPlugin, engine: EngineSection, storage: Path, options: ModelSettings) -> ServedModel:
    """Read a plugin's declarations (in the server process) and give it its engine: the
    server's ``engine`` section, its ``storage_dir()`` and its own ``options``."""
    name = plugin.ref.name
    adapter = ModelAdapter(name, plugin.obj, str(storage))
    step = "get_predict_args()"
    try:
        with legacy_vocabulary_allowed():
            predict_args = ArgumentSpec(name, "predict", _declared(adapter, "get_predict_args"))
            step = "get_train_args()"
            train_args = ArgumentSpec(name, "train", _declared(adapter, "get_train_args"))
            step = "schema"
            schema = response_schema_of(plugin.obj)
    except Exception as exc:
        raise PluginLoadError(name, f"{step} failed: {type(exc).__name__}: {exc}", traceback.format_exc()) from exc
    metadata, metadata_error = _initial_metadata(name, adapter)
    config = WorkerConfig(model=name, warm=engine.warm, storage_dir=str(storage), log_level=engine.log_level)
    launcher = WorkerLauncher(plugin.ref, config, mp_context(engine.start_method))  # trainings: the whole machine
    runner = make_executor(name, plugin.ref, config, ExecutorSpec.of(engine, options), adapter=adapter)
    dispatcher = Dispatcher(runner, options, has_predict_batch=adapter.has("predict_batch"))
    methods = frozenset(m for m in PLUGIN_METHODS if adapter.has(m))
    return ServedModel(
        name, methods, predict_args, train_args, schema, metadata, options, runner, dispatcher, launcher, metadata_error
    )


def build_isolated_model(
    ref: PluginRef,
    description: Mapping[str, Any],
    environment: EnvironmentLaunch,
    engine: EngineSection,
    storage: Path,
    options: ModelSettings,
) -> ServedModel:
    """A plugin in an environment of its own, from its portable description (see
    :mod:`deepaas_like.isolated`): its fields rebuilt with the server's marshmallow, its
    workers started with its environment's interpreter. Never imported here."""
    name = ref.name
    if options.executor != "process":
        raise PluginLoadError(
            name, f"a plugin in its own environment runs in worker processes, not with --executor {options.executor}"
        )
    try:
        with legacy_vocabulary_allowed():
            predict_args = ArgumentSpec(name, "predict", fields_from_description(description["predict_args"]))
            train_args = ArgumentSpec(name, "train", fields_from_description(description["train_args"]))
            schema = response_schema_from_description(description.get("schema"))
    except Exception as exc:
        raise PluginLoadError(name, f"its description cannot be read: {type(exc).__name__}: {exc}") from exc
    for argument, validators in {**unportable(description["predict_args"])}.items():
        LOG.info("model %s: argument %s is also checked by %s in the model's worker", name, argument, validators)
    metadata_error = description.get("metadata_error")
    metadata = description.get("metadata")
    metadata = checked_metadata(metadata) if metadata is not None else fallback_metadata(name, metadata_error)
    config = WorkerConfig(
        model=name, warm=engine.warm, storage_dir=str(storage), log_level=engine.log_level, environment=environment
    )
    launcher = WorkerLauncher(ref, config, mp_context(engine.start_method))
    runner = make_executor(name, ref, config, ExecutorSpec.of(engine, options))
    methods = frozenset(m for m in PLUGIN_METHODS if m in description.get("methods", ()))
    dispatcher = Dispatcher(runner, options, has_predict_batch="predict_batch" in methods)
    return ServedModel(
        name, methods, predict_args, train_args, schema, metadata, options, runner, dispatcher, launcher, metadata_error
    )
