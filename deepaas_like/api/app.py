"""The application factory: settings and plugins in, an aiohttp application out."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

from ..loading import LoadedPlugin, load_plugins
from ..models import ModelRegistry, build_model
from ..settings import Settings
from ..training import TrainingManager
from . import docs, handlers
from .keys import METRICS, MODELS, OPENAPI, SETTINGS, TRAININGS
from .metrics import Metrics
from .middleware import json_errors
from .openapi import build_openapi

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
    trainings = TrainingManager(settings)
    metrics = Metrics(models, trainings)
    app = web.Application(middlewares=[metrics.middleware(), json_errors], client_max_size=settings.client_max_size)
    app[SETTINGS] = settings
    app[MODELS] = models
    app[TRAININGS] = trainings
    app[METRICS] = metrics
    app[OPENAPI] = json.dumps(build_openapi(models, settings)).encode()
    _add_routes(app, settings)
    app.cleanup_ctx.append(_run_models)
    app.cleanup_ctx.append(_run_trainings)
    return app


def _add_routes(app: web.Application, settings: Settings) -> None:
    base = settings.base_path
    router = app.router

    def add(method: str, path: str, handler: Handler) -> None:
        full = base + path
        router.add_route(method, full, handler)
        if full.endswith("/") and len(full) > 1:
            router.add_route(method, full.rstrip("/"), handler)
        elif not full.endswith("/"):
            router.add_route(method, full + "/", handler)

    add("GET", "/", handlers.versions)
    add("GET", "/v2/", handlers.v2_version)
    add("GET", "/v2/models/", handlers.list_models)
    add("GET", "/v2/models/{name}/", handlers.get_model)
    add("GET", "/v2/health/live", handlers.health_live)
    add("GET", "/v2/health/ready", handlers.health_ready)
    add("GET", "/v2/models/{name}/ready", handlers.model_ready)
    router.add_get(base + "/metrics", handlers.metrics)
    predict = handlers.predict if settings.predict_endpoint else handlers.disabled("predict", "--no-predict-endpoint")
    add("POST", "/v2/models/{name}/predict/", predict)
    if settings.train_endpoint:
        add("POST", "/v2/models/{name}/train/", handlers.start_training)
        add("GET", "/v2/models/{name}/train/", handlers.list_trainings)
        add("GET", "/v2/models/{name}/train/{uuid}", handlers.get_training)
        add("DELETE", "/v2/models/{name}/train/{uuid}", handlers.cancel_training)
    else:
        off = handlers.disabled("train", "--no-train-endpoint")
        for method in ("POST", "GET"):
            add(method, "/v2/models/{name}/train/", off)
        for method in ("GET", "DELETE"):
            add(method, "/v2/models/{name}/train/{uuid}", off)
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


async def _run_trainings(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[TRAININGS].close()
