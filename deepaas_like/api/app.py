"""The application factory: settings and plugins in, an aiohttp application out."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

from ..database import Database
from ..registry.service import Registry
from ..loading import LoadedPlugin, load_plugins
from ..models import ModelRegistry, build_model
from ..settings import Settings
from ..jobs.manager import JobManager
from . import docs, handlers, job_handlers, registry_handlers
from .bodies import MAX_FIELDS
from .keys import DATABASE, JOBS, METRICS, MODELS, OPENAPI, SETTINGS, WARNINGS
from .metrics import Metrics
from .middleware import LOG as ERRORS_LOG
from .middleware import front_door
from .quietlog import RepeatedWarnings
from .openapi import OpenApiDocument

LOG = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings, plugins: Sequence[LoadedPlugin] | None = None) -> web.Application:
    """Build the server for ``plugins`` (default: those ``settings.model_name`` selects).

    Nothing runs yet: worker processes start, and models warm, when the application
    starts (its cleanup context), in the background; ``/v2/health/ready`` says when
    every model is ready. Raises :class:`deepaas_like.errors.PluginLoadError` when a
    plugin cannot be imported or declares unusable arguments.
    """
    if plugins is None:
        plugins = load_plugins(settings.model_name)
    models = ModelRegistry({p.ref.name: build_model(p, settings) for p in plugins})
    for name in settings.model_overrides:
        if name not in models:
            LOG.warning("per-model options given for '%s', which is not served", name)
    db = Database(settings.data_dir)
    models.uploads = Registry(settings, db, set(models))
    jobs = JobManager(settings, models, db)
    metrics = Metrics(models, jobs)
    app = web.Application(middlewares=[front_door(metrics)], client_max_size=settings.client_max_size,
                          client_max_fields=MAX_FIELDS)
    app[SETTINGS] = settings
    app[MODELS] = models
    app[DATABASE] = db
    app[JOBS] = jobs
    app[METRICS] = metrics
    app[WARNINGS] = RepeatedWarnings(ERRORS_LOG)
    app[OPENAPI] = OpenApiDocument(models, settings)
    app[OPENAPI].encoded()  # a plugin whose declarations cannot be documented fails here, at once
    _add_routes(app, settings)
    app.cleanup_ctx.append(_open_database)  # first: it locks the data directory
    app.cleanup_ctx.append(_run_registry)
    app.cleanup_ctx.append(_run_jobs)
    app.cleanup_ctx.append(_run_models)
    return app


@dataclass(frozen=True)
class Route:
    """One route of the API; ``group`` names the flag that can turn it off; ``exact``:
    served only as written (no variant with or without the trailing slash)."""

    method: str
    path: str
    handler: Handler
    group: str | None = None
    exact: bool = False


ROUTES = (
    Route("POST", "/v2/models/{name}/predict/", handlers.predict, "predict"),
    Route("GET", "/v2/models/{name}/", handlers.get_model),
    Route("GET", "/v2/models/", handlers.list_models),
    Route("GET", "/", handlers.versions),
    Route("GET", "/v2/", handlers.v2_version),
    Route("GET", "/v2/health/live", handlers.health_live),
    Route("GET", "/v2/health/ready", handlers.health_ready),
    Route("GET", "/v2/models/{name}/ready", handlers.model_ready),
    Route("POST", "/v2/models/{name}/train/", job_handlers.start_training, "train"),
    Route("GET", "/v2/models/{name}/train/", job_handlers.list_trainings, "train"),
    Route("GET", "/v2/models/{name}/train/{uuid}", job_handlers.get_training, "train"),
    Route("DELETE", "/v2/models/{name}/train/{uuid}", job_handlers.cancel_training, "train"),
    Route("GET", "/v2/models/{name}/train/{uuid}/log", job_handlers.training_log, "train"),
    Route("POST", "/v2/models/{name}/predictions/", job_handlers.submit_prediction, "predict"),
    Route("GET", "/v2/models/{name}/predictions/", job_handlers.list_predictions, "predict"),
    Route("GET", "/v2/models/{name}/predictions/{uuid}", job_handlers.get_prediction, "predict"),
    Route("DELETE", "/v2/models/{name}/predictions/{uuid}", job_handlers.cancel_prediction, "predict"),
    Route("GET", "/v2/models/{name}/predictions/{uuid}/result", job_handlers.prediction_result, "predict"),
    # the registry (uploaded models)
    Route("PUT", "/v2/models/{name}", exact=True, handler=registry_handlers.put_model),
    Route("PATCH", "/v2/models/{name}", exact=True, handler=registry_handlers.patch_model),
    Route("DELETE", "/v2/models/{name}", exact=True, handler=registry_handlers.delete_model),
    Route("POST", "/v2/models/{name}/restore", registry_handlers.restore_model),
    Route("GET", "/v2/models/{name}/versions/", registry_handlers.list_versions),
    Route("GET", "/v2/models/{name}/versions/{version}", registry_handlers.get_version),
    Route("GET", "/v2/models/{name}/versions/{version}/download", registry_handlers.download_version),
    Route("GET", "/v2/models/{name}/versions/{version}/config", registry_handlers.get_config),
    Route("PUT", "/v2/models/{name}/versions/{version}/config", registry_handlers.put_config),
    Route("POST", "/v2/models/{name}/versions/{version}/predict/", handlers.predict, "predict"),
    Route("POST", "/v2/models/{name}/versions/{version}/predictions/", job_handlers.submit_prediction, "predict"),
    # the same registry, in the shapes of Neurodeploy's API
    Route("GET", "/ml-models", registry_handlers.ml_models),
    Route("GET", "/ml-models/{name}", registry_handlers.ml_model),
    Route("PUT", "/ml-models/{name}", registry_handlers.ml_model_put),
    Route("DELETE", "/ml-models/{name}", registry_handlers.ml_model_delete),
)


def _add_routes(app: web.Application, settings: Settings) -> None:
    base = settings.base_path
    router = app.router

    def add(method: str, path: str, handler: Handler, exact: bool = False) -> None:
        full = base + path
        router.add_route(method, full, handler)
        if exact:
            return
        if full.endswith("/") and len(full) > 1:
            router.add_route(method, full.rstrip("/"), handler)
        elif not full.endswith("/"):
            router.add_route(method, full + "/", handler)

    # Most requested first: routes under one path prefix are matched in this order.
    enabled = {"train": settings.train_endpoint, "predict": settings.predict_endpoint, None: True}
    for route in ROUTES:
        if enabled[route.group]:
            add(route.method, route.path, route.handler, route.exact)
        else:
            add(route.method, route.path, handlers.disabled(route.group, f"--no-{route.group}-endpoint"))
    router.add_get(base + "/metrics", handlers.metrics)
    router.add_get(base + "/swagger.json", docs.openapi_document)
    if settings.doc_endpoint:
        add("GET", "/api", docs.swagger_ui)
        router.add_static(base + "/api/static", docs.static_directory())
        add("GET", "/ui", docs.redirect_to_ui)


async def _run_models(app: web.Application) -> AsyncIterator[None]:
    """Start every model's runner in the background; stop them all on shutdown."""
    models = app[MODELS]
    starting = [asyncio.create_task(m.start(), name=f"start {m.name}") for m in models.values()]
    try:
        yield
    finally:
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        timeout = app[SETTINGS].shutdown_timeout
        await asyncio.gather(*(m.stop(timeout) for m in models.values()), return_exceptions=True)


async def _open_database(app: web.Application) -> AsyncIterator[None]:
    """Lock the data directory and open (or migrate) the server's database."""
    await app[DATABASE].open()
    try:
        yield
    finally:
        await app[DATABASE].close()


async def _run_registry(app: web.Application) -> AsyncIterator[None]:
    """Read the uploaded models back and start their shared workers; stop them on shutdown."""
    registry = app[MODELS].uploads
    await registry.start()
    try:
        yield
    finally:
        await registry.close()


async def _run_jobs(app: web.Application) -> AsyncIterator[None]:
    """Read the jobs back (recovering interrupted ones); on shutdown, interrupt the rest."""
    await app[JOBS].start()
    try:
        yield
    finally:
        await app[JOBS].close()
