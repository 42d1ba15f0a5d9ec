"""A served model: the plugin, its declared arguments and schema, and its runner."""

from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import marshmallow

from .adapter import ModelAdapter
from .dispatch import Dispatcher
from .arguments import ArgumentSpec, legacy_vocabulary_allowed
from .errors import ModelUnavailable, NotFound, PluginLoadError
from .jsonutil import to_jsonable
from .loading import LoadedPlugin, PluginRef
from .process import WorkerStartFailed
from .runners import ProcessRunner, Runner, ThreadRunner, mp_context
from .settings import ModelSettings, Settings
from .worker import WorkerConfig

LOG = logging.getLogger(__name__)


class ModelNotFound(NotFound):
    pass


@dataclass(eq=False)
class ServedModel:
    """One model as the API sees it. Its state: starting, ready, failed or stopped."""

    name: str
    ref: PluginRef
    adapter: ModelAdapter
    predict_args: ArgumentSpec
    train_args: ArgumentSpec
    response_schema: type[marshmallow.Schema] | None
    metadata: dict[str, Any]
    runner: Runner
    options: ModelSettings
    dispatcher: Dispatcher
    state: str = "starting"
    error: str | None = None
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    _validator: marshmallow.Schema | None = None

    def response_validator(self) -> marshmallow.Schema:
        """A (cached) instance of the response schema, for validating predictions."""
        if self._validator is None:
            assert self.response_schema is not None
            with legacy_vocabulary_allowed():
                self._validator = self.response_schema()
        return self._validator

    @property
    def can_predict(self) -> bool:
        return self.adapter.has("predict")

    @property
    def can_train(self) -> bool:
        return self.adapter.has("train")

    async def start(self) -> None:
        """Start the runner (warming the model); failures are recorded, not raised."""
        try:
            await self.runner.start()
            self.dispatcher.start()
        except WorkerStartFailed as exc:
            self.state, self.error = "failed", f"could not start the model: {exc}"
            detail = exc.failure.traceback if exc.failure is not None else ""
            LOG.error("model %s: %s\n%s", self.name, self.error, detail)
        else:
            await self.refresh_metadata()
            self.state = "ready"
            LOG.info("model %s is ready (%s executor)", self.name, self.runner.kind)
        finally:
            self._settled.set()

    async def wait_ready(self) -> None:
        """Wait while the model warms up; 503 if it could not start or is stopping."""
        if self.state == "starting":
            await self._settled.wait()
        if self.state != "ready":
            raise ModelUnavailable(
                f"Model '{self.name}' is not available: {self.error or self.state}",
                retry_after=5,
                model=self.name,
            )

    async def predict(self, kwargs: Mapping[str, Any]) -> Any:
        """One prediction: batched with others when batching is on, within the timeout."""
        await self.wait_ready()
        return await self.dispatcher.submit(kwargs)

    @property
    def waiting(self) -> int:
        """Predictions waiting for a worker (the queue depth)."""
        return self.runner.waiting + self.dispatcher.waiting

    async def stop(self, timeout: float) -> None:
        self.state = "stopped"
        self._settled.set()
        await self.dispatcher.stop()
        await self.runner.stop(timeout)

    async def refresh_metadata(self) -> None:
        """Ask a warm worker for get_metadata() (after start and after each training).

        The copy of the plugin in the server process is never warmed in process mode,
        so the serving model itself is the one that knows, e.g., its trained version.
        """
        if not self.adapter.has("get_metadata"):
            return
        try:
            self.metadata = checked_metadata(await self.runner.call("get_metadata", {}))
        except Exception as exc:
            LOG.warning("model %s: get_metadata() failed (%s); keeping the previous metadata", self.name, exc)

    def document(self, href: str) -> dict[str, Any]:
        """The model's entry in ``GET /v2/models/`` (DEEPaaS's shape)."""
        doc: dict[str, Any] = {"id": self.name, "name": self.name, "links": [{"rel": "self", "href": href}]}
        doc.update(self.metadata)
        return doc


class ModelRegistry(Mapping[str, ServedModel]):
    """The served models by name."""

    def __init__(self, models: Mapping[str, ServedModel]) -> None:
        self._models = dict(models)

    def __getitem__(self, name: str) -> ServedModel:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def get_model(self, name: str) -> ServedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(
                f"Model '{name}' not found. Served models: {', '.join(self._models) or '(none)'}",
                details={"models": list(self._models)},
            ) from None


def read_metadata(name: str, adapter: ModelAdapter) -> dict[str, Any]:
    if not adapter.has("get_metadata"):
        return {"description": f"Model '{name}' provides no get_metadata()"}
    return checked_metadata(adapter.call("get_metadata"))


def checked_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"get_metadata() must return a dict, not {type(metadata).__name__}")
    return to_jsonable(dict(metadata))


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
    raise TypeError(
        f"'schema' must be a marshmallow Schema class or a dict of fields, not {type(schema).__name__}"
    )


def build_model(plugin: LoadedPlugin, settings: Settings) -> ServedModel:
    """Read a plugin's declarations (in the server process) and give it a runner."""
    name = plugin.ref.name
    storage = str(settings.models_dir / name)
    adapter = ModelAdapter(name, plugin.obj, storage)
    step = "get_predict_args()"
    try:
        with legacy_vocabulary_allowed():
            predict_args = ArgumentSpec(name, "predict", _declared(adapter, "get_predict_args"))
            step = "get_train_args()"
            train_args = ArgumentSpec(name, "train", _declared(adapter, "get_train_args"))
            step = "schema"
            schema = response_schema_of(plugin.obj)
            step = "get_metadata()"
            metadata = read_metadata(name, adapter)
    except Exception as exc:
        raise PluginLoadError(name, f"{step} failed: {type(exc).__name__}: {exc}", traceback.format_exc()) from exc
    options = settings.for_model(name)
    config = WorkerConfig(model=name, warm=settings.warm, storage_dir=storage, log_level=settings.log_level)
    runner: Runner
    if options.executor == "thread":
        runner = ThreadRunner(name, adapter, options.workers, warm=settings.warm, max_queue=options.max_queue)
    else:
        runner = ProcessRunner(
            name, plugin.ref, config, options.workers, mp_context(settings.start_method), max_queue=options.max_queue
        )
    dispatcher = Dispatcher(runner, options, has_predict_batch=adapter.has("predict_batch"))
    return ServedModel(name, plugin.ref, adapter, predict_args, train_args, schema, metadata, runner, options, dispatcher)
