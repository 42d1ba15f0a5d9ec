"""What serves a version of an uploaded model: its :class:`~deepaas_like.models.ServedModel`
(arguments from its columns, its own queue and batching) on the shared pool of hosts that it
is given, built on first use and retired when the version changes or goes away.

Nothing here writes a model's record but its last prediction's time; the registry
(:mod:`.service`) writes, and tells this side which versions to retire."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Callable, Coroutine

from ..arguments import ArgumentSpec
from ..background import Background
from ..containment.sandbox import SandboxSpec
from ..database import StoreOutage
from ..engine.dispatch import Dispatcher
from ..engine.executors import ExecutorSpec, make_shared_pool
from ..engine.shared import LoadStats, RaySharedPool, SharedPool
from ..engine.worker import EnvironmentLaunch, WorkerConfig
from ..errors import Conflict, Forbidden, NotFound
from ..frameworks import Column, Signature, declared_frameworks
from ..legacy import legacy_vocabulary_allowed
from ..loading import PluginRef
from ..models import ServedModel
from ..settings.sections import RegistrySection
from .artifacts import ArtifactStore
from .catalog import Catalog
from .environment_pools import EnvironmentPools
from .host import CAPACITY_ENV, FRAMEWORKS_ENV, PRELOAD_ENV, Target
from .intake import BATCHING, SAFE_FORMATS
from .records import ModelRecord, RegistryStore, VersionRecord, VersionStatus
from .rows import RowsArguments, column_field, columns_from_schema

LOG = logging.getLogger(__name__)

LAST_PREDICT_SAVE_INTERVAL = 10.0
HOST = PluginRef("registry", "deepaas_like.registry.host:RegistryHost", group="deepaas_like.internal")

Pool = SharedPool | RaySharedPool


class CodeRefused(Forbidden):
    """A format whose loading runs code, where such formats cannot be served."""


def sandbox_spec(section: RegistrySection) -> SandboxSpec:
    """How the registry's workers are contained: what they must not reach (the server's
    state, keys and configuration), who they run as, their limits."""
    return SandboxSpec(
        deny=section.secrets,
        user=section.sandbox_user,
        memory=section.sandbox_memory,
        tasks=section.sandbox_tasks,
        file_size=section.worker_file_size,
        reply_limit=section.worker_reply_limit,
    )


def registry_pool(section: RegistrySection, environment: EnvironmentLaunch | None = None) -> Pool:
    """The shared hosts of uploaded models (not started): ``registry_workers`` of them, each
    keeping up to ``max_loaded_models`` loaded, contained unless they are Ray actors.

    ``environment``: the hosts of the versions of one environment of their own (worker
    processes of its interpreter, contained, whatever the executor), told the framework
    plugins' entry points, which that environment has no metadata of."""
    environ = [(CAPACITY_ENV, str(section.max_loaded_models)), (PRELOAD_ENV, "1" if section.registry_preload else "0")]
    if environment is not None:
        environ.append((FRAMEWORKS_ENV, json.dumps(declared_frameworks())))
    processes = section.engine.executor != "ray" or environment is not None
    config = WorkerConfig(
        model="registry",
        log_level=section.engine.log_level,
        environ=tuple(environ),
        sandbox=sandbox_spec(section) if processes else None,
        environment=environment,
    )
    # uploads on the Ray cluster too, with the global resources; registry_workers of them
    spec = dataclasses.replace(ExecutorSpec.of(section.engine, section.engine), workers=section.registry_workers)
    if environment is not None:  # an interpreter of its own: a process here
        spec = dataclasses.replace(spec, kind="process")
    return make_shared_pool(HOST, config, spec, section.max_loaded_models)


class Serving:
    """The servable versions of uploaded models, on ``pool`` (started with the first one).

    ``runs_code(library, filetype)``: whether loading such a file runs its author's code
    (the registry knows the framework plugins); ``shared``: replicas share the store;
    ``environments``: the pools of versions in environments of their own."""

    def __init__(
        self,
        settings: RegistrySection,
        pool: Pool,
        catalog: Catalog,
        store: RegistryStore,
        artifacts: ArtifactStore,
        runs_code: Callable[[str, str], bool],
        shared: bool,
        environments: EnvironmentPools,
    ) -> None:
        self._settings = settings
        self.pool = pool
        self.environments = environments
        self._catalog = catalog
        self._store = store
        self._artifacts = artifacts
        self.runs_code = runs_code
        self._shared = shared
        self._served: dict[tuple[str, int], ServedModel] = {}
        self._saved_predict: dict[str, float] = {}
        self._background = Background("registry serving")
        self._pool_started = False

    # --- life cycle -----------------------------------------------------------------

    def ensure_pool(self) -> None:
        """Start the shared workers, once (in the background)."""
        if not self._pool_started:
            self._pool_started = True
            self._spawn(self._start_pool())

    def pool_of(self, version: VersionRecord) -> Pool:
        """The hosts that serve ``version``: its environment's, or the shared pool."""
        key = version.environment
        return self.pool if key is None else self.environments.pool(key)

    def start_pool_of(self, version: VersionRecord) -> Pool:
        """:meth:`pool_of`, started (in the background) if it was not."""
        key = version.environment
        if key is None:
            self.ensure_pool()
            return self.pool
        return self.environments.start(key)

    async def _start_pool(self) -> None:
        try:
            await self.pool.start()
        except Exception as exc:  # every uploaded model is then unavailable, with this reason
            LOG.error("registry: the shared workers could not start: %s", exc)

    async def close(self) -> None:
        """Save when each model last predicted, stop every version's queue, then the pool."""
        await self._background.cancel_all()
        for model in [*self._catalog.models(), *self._catalog.models(deleted=True)]:
            try:
                await self._save_last_predict(model, force=True)
            except StoreOutage:
                break  # a hint of use, not worth waiting for the store at shutdown
        for served in self._served.values():
            await served.stop(0)
        if self._pool_started:
            await self.pool.stop(self._settings.shutdown_timeout)
        await self.environments.close(self._settings.shutdown_timeout)

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        return self._background.spawn(coro)

    def retire(self, name: str, number: int) -> None:
        """Stop serving a version from its current ServedModel; in-flight calls finish on it."""
        old = self._served.pop((name, number), None)
        if old is not None:
            self._spawn(_stop_when_idle(old))

    def load_stats(self) -> tuple[LoadStats, int]:
        """The shared workers' loads, evictions and load times, and how many models they hold now."""
        return self.pool.stats, len(self.pool.loaded_keys())

    # --- a version, served ------------------------------------------------------------

    async def served(self, name: str, number: int | None = None) -> ServedModel:
        """The servable model of a version (the current one by default), started on first use.
        With replicas (a shared store), a model or version this one does not have (or not yet
        ready) is looked for in the store before the answer says so: it may have been made a
        moment ago."""
        try:
            return await self._served_now(name, number)
        except (NotFound, Conflict):
            if not self._shared or not await self._catalog.catch_up(name, also_known=True):
                raise
        return await self._served_now(name, number)

    async def _served_now(self, name: str, number: int | None) -> ServedModel:
        model = self._catalog.record(name)
        if number is None:
            if model.current_version is None:
                versions = self._catalog.versions_of(name)
                building = [n for n, v in versions.items() if v.status is VersionStatus.BUILDING]
                raise Conflict(
                    f"Model '{name}' has no version that loads yet: version {building[-1]} is building its environment"
                    if building
                    else f"Model '{name}' has no version that loads; upload one",
                    details={"model": name, "versions": len(versions)},
                )
            number = model.current_version
        version = self._catalog.version(name, number)
        if version.status is not VersionStatus.READY:
            raise Conflict(
                f"Version {number} of model '{name}' is not servable: {version.error or version.status}",
                details={"model": name, "version": number, "status": version.status},
            )
        served = self._served.get((model.name, version.number))
        if served is None:
            target = self.target(version, None)
            missing = self.environments.missing(version.environment) if version.environment else None
            if missing is not None:
                raise Conflict(
                    f"Version {number} of model '{name}' cannot serve: {missing}",
                    details={"model": name, "version": number, "environment": version.environment},
                )
            pool = self.start_pool_of(version)
            await self.check_code_servable(model.name, target.library, target.filetype, pool)
            served = self._served.get((model.name, version.number))  # another call may have built it meanwhile
        if served is None:
            self.start_pool_of(version)
            served = self._served[(model.name, version.number)] = self.build(model, version)
            await served.start()
        return served

    def build(self, model: ModelRecord, version: VersionRecord) -> ServedModel:
        """A version's ServedModel (not started): its arguments, its queue, a view of the pool."""
        columns = self.columns(version)
        view = self.pool_of(version).view(self.target(version, columns))
        options = self._settings.for_model(model.name)
        batching = {k: v for k, v in (version.config.get("batching") or {}).items() if k in BATCHING}
        if batching:
            options = dataclasses.replace(options, **batching)
        with legacy_vocabulary_allowed():
            single = ArgumentSpec(
                model.name, "predict", {c.name: column_field(c, True) for c in columns} if columns else {}
            )
            train = ArgumentSpec(model.name, "train", {})
        return ServedModel(
            name=model.name,
            methods=frozenset({"predict", "predict_batch"}),
            predict_args=single,
            train_args=train,
            response_schema=None,
            metadata={"version": version.number, "library": version.library, "filetype": version.filetype},
            options=options,
            runner=view,
            dispatcher=Dispatcher(view, options, has_predict_batch=True),
            rows_args=RowsArguments(model.name, columns),
            on_predict=self.note_predict,
        )

    def columns(self, version: VersionRecord) -> list[Column] | None:
        """The version's input columns (with the range its reference dataset covers)."""
        columns = _declared_columns(version)
        observed = (version.config.get("dataset") or {}).get("ranges") or {}
        if columns is not None and observed:
            columns = [
                dataclasses.replace(c, observed=tuple(observed[c.name]))
                if isinstance(observed.get(c.name), list)
                else c
                for c in columns
            ]
        return columns

    def target(self, version: VersionRecord, columns: list[Column] | None) -> Target:
        """What a host loads for the version: its file (or its ONNX conversion) and columns."""
        optimized = version.optimization or {}
        sha, filetype, library = version.sha256, version.filetype, version.library
        if optimized.get("serving") == "onnx":
            sha, filetype, library = optimized["onnx_sha256"], "onnx", "onnx"
        return Target(
            key=f"{sha}:{filetype}",
            model=version.model,
            path=str(self._artifacts.path(sha)),
            library=library,
            filetype=filetype,
            columns=tuple(c.name for c in columns) if columns is not None else None,
            output_schema=version.config.get("output_schema"),
            contained_only=self.runs_code(library, filetype) and not self._settings.allow_unconfined_code,
        )

    async def check_code_servable(self, name: str, library: str, filetype: str, pool: Pool | None = None) -> None:
        """A format whose loading runs code is loaded only by contained workers (or with
        --allow-unconfined-code): else a 403 saying why and what to upload instead.
        ``pool``: the hosts that would load it (started: default, the shared pool)."""
        if not self.runs_code(library, filetype) or self._settings.allow_unconfined_code:
            return
        if pool is None:
            pool = self.pool
            if self._settings.engine.executor != "ray":
                self.ensure_pool()
        if not isinstance(pool, RaySharedPool):
            await pool.started.wait()
            if pool.contains_code:
                return
        raise CodeRefused(
            f"Refused: loading a {filetype} file runs code, and this server cannot contain the workers that "
            f"would load it ({pool.containment_summary()}). Upload the model as {SAFE_FORMATS}, or start "
            "the server with --allow-unconfined-code",
            details={"model": name, "filetype": filetype},
        )

    # --- when a model last predicted ------------------------------------------------------

    def note_predict(self, name: str) -> None:
        model = self._catalog.peek(name)
        if model is not None:
            model.last_predict = time.time()
            if model.last_predict - self._saved_predict.get(name, 0.0) >= LAST_PREDICT_SAVE_INTERVAL:
                self._spawn(self._save_last_predict(model))

    async def _save_last_predict(self, model: ModelRecord, force: bool = False) -> None:
        if model.last_predict is not None and (force or model.last_predict != self._saved_predict.get(model.name)):
            self._saved_predict[model.name] = model.last_predict
            await self._store.save_model(model, "last_predict")


def _declared_columns(version: VersionRecord) -> list[Column] | None:
    """The columns the version's config or its signature names (``x0``… when only counted)."""
    schema = version.config.get("input_schema")
    if schema:
        return columns_from_schema(schema)
    signature = Signature.from_json(version.signature or {})
    if signature.columns is not None:
        return signature.columns
    if signature.n_inputs:
        return [Column(f"x{i}") for i in range(signature.n_inputs)]
    return None


async def _stop_when_idle(served: ServedModel, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while served.waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await served.stop(0)
