"""The application factory: settings and plugins in, an aiohttp application out."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator, Sequence

from aiohttp import web

from ..auth.gate import Gate
from ..database import Database, StoreOutage
from ..engine import forking
from ..environments import EnvironmentStore, environments_root, in_use
from ..errors import PluginLoadError
from ..isolated import served_isolated
from ..jobs.manager import JobManager
from ..loading import LoadedPlugin, load_plugins
from ..models import ModelSet, ServedModel, build_model
from ..registry.service import Registry
from ..registry.serving import registry_pool
from ..service import DataPlane
from ..settings import Settings
from ..settings.sections import AuthSection, EngineSection, JobsSection, RegistrySection
from .front_door import LOG as ERRORS_LOG
from .front_door import FrontDoor
from .keys import DATABASE, GATE, JOBS, METRICS, MODELS, OPENAPI, ORIGINS, PLANE, SETTINGS, WARNINGS
from .metrics import Metrics
from .openapi import OpenApiDocument
from .origins import Origins
from .quietlog import RepeatedWarnings
from .routes import add_routes, policy_of

LOG = logging.getLogger(__name__)
STORE_POLL_INTERVAL = 0.5  # seconds between two looks for changes made by other processes
ENVIRONMENT_GRACE = 3600.0  # seconds an unused environment is kept after it was built or last used


def create_app(settings: Settings, plugins: Sequence[LoadedPlugin] | None = None) -> web.Application:
    """Build the server for ``plugins`` (default: those ``settings.model_name`` selects).

    Nothing runs yet: worker processes start, and models warm, when the application
    starts (its cleanup context), in the background; ``/v2/health/ready`` says when
    every model is ready. Raises :class:`deepaas_like.errors.PluginLoadError` when a
    plugin the settings name (``--model-name``) cannot be imported or declares unusable
    arguments; serving every installed plugin, one that fails is served as *failed* (listed
    with its error, its routes answering 503) and the others are served.
    """
    broken: list[PluginLoadError] | None = None if settings.model_name else []
    engine = EngineSection.of(settings)
    built: dict[str, ServedModel] = {}
    isolated_broken: list[PluginLoadError] = []
    if plugins is None:  # the plugins registered in environments of their own, then those installed here
        root = environments_root(settings)
        built, isolated_broken = served_isolated(
            root,
            Path(settings.data_dir) / "runtime",
            settings.model_name,
            engine,
            settings.models_dir,
            settings.for_model,
        )
        if isolated_broken and broken is None:
            raise isolated_broken[0]
        here = [name for name in settings.model_name if name not in built]
        plugins = load_plugins(here, broken=broken) if here or not settings.model_name else []
    for plugin in plugins:
        name = plugin.ref.name
        try:
            if name in built or any(e.name == name for e in isolated_broken):
                raise PluginLoadError(
                    name,
                    "installed twice: in the server's environment and in an environment of its own "
                    "(deepaas-install-plugin --isolated); uninstall one of them",
                )
            built[name] = build_model(plugin, engine, settings.models_dir / name, settings.for_model(name))
        except PluginLoadError as exc:
            if broken is None:
                raise
            broken.append(exc)
    if broken is not None:
        broken.extend(isolated_broken)
    models = ModelSet(built, {e.name: e for e in broken or ()})
    for error in broken or ():
        LOG.error("%s; the other models are served\n%s", error, error.traceback_text.rstrip())
    for name in settings.model_overrides:
        if name not in models:
            LOG.warning("per-model options given for '%s', which is not served", name)
    db = Database(settings.data_dir, url=settings.store)
    gate = Gate(AuthSection.of(settings), db)
    section = RegistrySection.of(settings)
    models.uploads = gate.uploads = Registry(section, db, {*models, *models.broken}, registry_pool(section))
    gate.plugins = frozenset({*models, *models.broken})
    jobs = JobManager(JobsSection.of(settings), models, db)
    metrics = Metrics(models, jobs)
    # An urlencoded form may hold as many fields as the longest arguments a model declares, at
    # least, with room to be refused by their validation (as for multipart bodies, api/bodies.py).
    fields = max(
        [
            settings.max_form_parts,
            *(2 * spec.declared_parts for m in models.values() for spec in (m.predict_args, m.train_args)),
        ]
    )
    app = web.Application(client_max_size=settings.client_max_size, client_max_fields=fields)
    app[SETTINGS] = settings
    app[MODELS] = models
    app[DATABASE] = db
    app[GATE] = gate
    app[JOBS] = jobs
    app[PLANE] = DataPlane(models, jobs, Path(settings.data_dir) / "explanations")
    app[METRICS] = metrics
    app[WARNINGS] = RepeatedWarnings(ERRORS_LOG)
    app[OPENAPI] = OpenApiDocument(models, settings, policy_of)
    app[OPENAPI].encoded()  # a plugin whose declarations cannot be documented fails here, at once
    app[ORIGINS] = origins = Origins(settings)
    if origins.cors:
        app.on_response_prepare.append(_cors_headers)
    add_routes(
        app,
        settings,
        FrontDoor(
            metrics, gate, origins, settings.request_read_timeout, models.uploads.catch_up if db.shared else None
        ),
    )
    app.cleanup_ctx.append(_open_database)  # first: it locks the data directory
    app.cleanup_ctx.append(_run_gate)
    app.cleanup_ctx.append(_run_registry)
    app.cleanup_ctx.append(_watch_store)
    app.cleanup_ctx.append(_run_jobs)
    app.cleanup_ctx.append(_run_models)
    app.cleanup_ctx.append(_collect_environments)
    return app


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An answer to an origin of --cors-origins says that its page may read it."""
    headers = request.app[ORIGINS].cors_headers(request)
    if headers is not None:
        response.headers.update(headers)


async def _run_models(app: web.Application) -> AsyncIterator[None]:
    """Start every model's runner in the background; stop them all on shutdown."""
    models = app[MODELS]
    starting = [asyncio.create_task(m.start(), name=f"start {m.name}") for m in models.values()]
    preparing = asyncio.create_task(_prepare_forking(starting), name="prepare the fork server")
    try:
        yield
    finally:
        for task in (*starting, preparing):
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        timeout = app[SETTINGS].shutdown_timeout
        await asyncio.gather(*(m.stop(timeout) for m in models.values()), return_exceptions=True)


async def _collect_environments(app: web.Application) -> AsyncIterator[None]:
    """Remove, once at start and in the background, the environments that nothing uses any
    more (an uninstalled plugin's, a purged version's); those built or used in the last
    :data:`ENVIRONMENT_GRACE` seconds stay (a replica may be about to record its use)."""
    root = environments_root(app[SETTINGS])
    task = asyncio.create_task(asyncio.to_thread(_collect, root), name="collect environments")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _collect(root: Path) -> None:
    if not root.is_dir():
        return
    try:
        removed = EnvironmentStore(root).collect(in_use(root), grace=ENVIRONMENT_GRACE)
    except (OSError, ValueError) as exc:  # a record that is no record: kept, and said
        LOG.warning("environments in %s not collected: %s", root, exc)
        return
    for key in removed:
        LOG.info("environment %s removed: nothing uses it", key[:12])


async def _prepare_forking(starting: list[asyncio.Task]) -> None:
    """Once every model has started (well or not), the next worker process asked for starts
    the helper that later ones are forked from (see :mod:`deepaas_like.engine.forking`)."""
    if starting:
        await asyncio.wait(starting)
    forking.arm_all()


async def _open_database(app: web.Application) -> AsyncIterator[None]:
    """Lock the data directory and open (or migrate) the server's database."""
    await app[DATABASE].open()
    await app[DATABASE].changed_elsewhere()  # the baseline, before anything is read
    try:
        yield
    finally:
        await app[DATABASE].close()


async def _run_gate(app: web.Application) -> AsyncIterator[None]:
    """Read tokens, users and access lists; keep them in step with the database."""
    await app[GATE].start()
    try:
        yield
    finally:
        await app[GATE].close()


async def _run_registry(app: web.Application) -> AsyncIterator[None]:
    """Read the uploaded models back and start their shared workers; stop them on shutdown."""
    registry = app[MODELS].uploads
    await registry.start()
    try:
        yield
    finally:
        await registry.close()


async def _watch_store(app: web.Application) -> AsyncIterator[None]:
    """Take in what other processes write to the store: ``deepaas-token`` on the same data
    directory, other replicas on the same PostgreSQL (tokens, roles, uploaded models)."""
    db, gate, registry = app[DATABASE], app[GATE], app[MODELS].uploads

    async def watch() -> None:
        while True:
            await asyncio.sleep(STORE_POLL_INTERVAL)
            try:
                if await db.changed_elsewhere():
                    await gate.reload()
                    await registry.refresh()
            except StoreOutage:  # logged once by the store; the next round tries again
                pass
            except Exception:  # the next round tries again
                LOG.exception("reading changes of the store %s back failed", db)

    task = asyncio.create_task(watch(), name="watch the store")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_jobs(app: web.Application) -> AsyncIterator[None]:
    """Read the jobs back (recovering interrupted ones); on shutdown, interrupt the rest."""
    await app[JOBS].start()
    try:
        yield
    finally:
        await app[JOBS].close()
