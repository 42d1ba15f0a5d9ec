"""Every route of the API, once: method, path, handler, the flag that turns it off, and its
access policy. Registration, the access check and the OpenAPI document all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from ..auth import policy as p
from ..auth.policy import Policy
from ..settings import Settings
from . import auth_handlers, docs, handlers, job_handlers, oip_handlers, quality_handlers, registry_handlers, ui
from .front_door import FrontDoor
from .keys import POLICIES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One route; ``group`` names the flag that can turn it off; ``exact``: served only as
    written (no variant with or without the trailing slash)."""

    method: str
    path: str
    handler: Handler
    policy: Policy
    group: str | None = None
    exact: bool = False


# Most requested first: routes under one path prefix are matched in this order.
ROUTES = (
    Route("POST", "/v2/models/{name}/predict/", handlers.predict, p.PREDICT, "predict"),
    Route("GET", "/v2/models/{name}/", handlers.get_model, p.METADATA),
    Route("POST", "/v2/models/{name}/infer", oip_handlers.infer, p.PREDICT, "predict"),
    Route("GET", "/v2/models/", handlers.list_models, p.LIST),
    Route("GET", "/", handlers.versions, p.OPEN),
    Route("GET", "/v2/", handlers.v2_version, p.OPEN),
    Route("GET", "/v2/health/live", handlers.health_live, p.OPEN),
    Route("GET", "/v2/health/ready", handlers.health_ready, p.OPEN),
    Route("GET", "/v2/models/{name}/ready", handlers.model_ready, p.METADATA),
    Route("POST", "/v2/models/{name}/train/", job_handlers.start_training, p.TRAIN, "train"),
    Route("GET", "/v2/models/{name}/train/", job_handlers.list_trainings, p.TRAININGS, "train"),
    Route("GET", "/v2/models/{name}/train/{uuid}", job_handlers.get_training, p.TRAININGS, "train"),
    Route("DELETE", "/v2/models/{name}/train/{uuid}", job_handlers.cancel_training, p.TRAININGS, "train"),
    Route("GET", "/v2/models/{name}/train/{uuid}/log", job_handlers.training_log, p.TRAININGS, "train"),
    Route("POST", "/v2/models/{name}/predictions/", job_handlers.submit_prediction, p.PREDICT_LATER, "predict"),
    Route("GET", "/v2/models/{name}/predictions/", job_handlers.list_predictions, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/predictions/{uuid}", job_handlers.get_prediction, p.PREDICTIONS, "predict"),
    Route("DELETE", "/v2/models/{name}/predictions/{uuid}", job_handlers.cancel_prediction, p.PREDICTIONS,
          "predict"),
    Route("GET", "/v2/models/{name}/predictions/{uuid}/result", job_handlers.prediction_result, p.PREDICTIONS,
          "predict"),
    # the registry (uploaded models)
    Route("PUT", "/v2/models/{name}", registry_handlers.put_model, p.UPLOAD, exact=True),
    Route("PATCH", "/v2/models/{name}", registry_handlers.patch_model, p.EDIT, exact=True),
    Route("DELETE", "/v2/models/{name}", registry_handlers.delete_model, p.OWN, exact=True),
    Route("POST", "/v2/models/{name}/restore", registry_handlers.restore_model, p.OWN),
    Route("GET", "/v2/models/{name}/versions/", registry_handlers.list_versions, p.READ),
    Route("GET", "/v2/models/{name}/versions/{version}", registry_handlers.get_version, p.READ),
    Route("GET", "/v2/models/{name}/versions/{version}/download", registry_handlers.download_version, p.READ),
    Route("GET", "/v2/models/{name}/versions/{version}/config", registry_handlers.get_config, p.READ),
    Route("PUT", "/v2/models/{name}/versions/{version}/config", registry_handlers.put_config, p.EDIT),
    Route("POST", "/v2/models/{name}/versions/{version}/predict/", handlers.predict, p.PREDICT, "predict"),
    Route("POST", "/v2/models/{name}/versions/{version}/predictions/", job_handlers.submit_prediction,
          p.PREDICT_LATER, "predict"),
    Route("POST", "/v2/models/{name}/versions/{version}/infer", oip_handlers.infer, p.PREDICT, "predict"),
    Route("GET", "/v2/models/{name}/versions/{version}/ready", handlers.model_ready, p.METADATA),
    Route("GET", "/v2/models/{name}/versions/{version}/dataset", quality_handlers.get_dataset, p.READ),
    Route("PUT", "/v2/models/{name}/versions/{version}/dataset", quality_handlers.put_dataset, p.EDIT),
    # knowing the model: tests and feature impact
    Route("POST", "/v2/models/{name}/tests/", quality_handlers.start_tests, p.PREDICT_LATER, "predict"),
    Route("GET", "/v2/models/{name}/tests/", job_handlers.list_tests, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/tests/{uuid}", job_handlers.get_test, p.PREDICTIONS, "predict"),
    Route("DELETE", "/v2/models/{name}/tests/{uuid}", job_handlers.cancel_test, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/tests/{uuid}/log", quality_handlers.test_log, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/tests/{uuid}/log/tail", quality_handlers.test_log_tail, p.PREDICTIONS,
          "predict"),
    Route("POST", "/v2/models/{name}/feature-impact/", quality_handlers.start_impact, p.PREDICT_LATER, "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/", job_handlers.list_impacts, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/{uuid}", job_handlers.get_impact, p.PREDICTIONS, "predict"),
    Route("DELETE", "/v2/models/{name}/feature-impact/{uuid}", job_handlers.cancel_impact, p.PREDICTIONS,
          "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/{uuid}/log", quality_handlers.impact_log, p.PREDICTIONS,
          "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/{uuid}/plot.png", quality_handlers.impact_plot_png,
          p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/access-control", auth_handlers.get_access, p.SHARING),
    Route("PATCH", "/v2/models/{name}/access-control", auth_handlers.patch_access, p.SHARE),
    # the same registry, in the shapes of Neurodeploy's API
    Route("GET", "/ml-models", registry_handlers.ml_models, p.LIST),
    Route("GET", "/ml-models/{name}", registry_handlers.ml_model, p.METADATA),
    Route("PUT", "/ml-models/{name}", registry_handlers.ml_model_put, p.UPLOAD),
    Route("DELETE", "/ml-models/{name}", registry_handlers.ml_model_delete, p.OWN),
    # keys and access
    Route("POST", "/v2/tokens", auth_handlers.create_token, p.ADMIN),
    Route("GET", "/v2/tokens", auth_handlers.list_tokens, p.ADMIN),
    Route("DELETE", "/v2/tokens/{id}", auth_handlers.revoke_token, p.ADMIN),
    Route("GET", "/v2/users", auth_handlers.list_users, p.ADMIN),
    Route("POST", "/v2/users", auth_handlers.create_user, p.ADMIN),
    Route("GET", "/v2/audit", auth_handlers.audit_log, p.ADMIN),
    Route("GET", "/swagger.json", docs.openapi_document, p.OPEN, exact=True),
)
DOC_ROUTES = (
    Route("GET", "/api", docs.swagger_ui, p.OPEN),
    Route("GET", "/api/static/{file}", docs.static_file, p.OPEN, exact=True),
    # the what-if page (deepaas_like/ui): static, so open; the API calls it makes carry the access
    Route("GET", "/ui/", ui.index, p.OPEN),
    Route("GET", "/ui/models/{name}", ui.model_page, p.OPEN),
    Route("GET", "/ui/static/{file}", ui.asset, p.OPEN, exact=True),
    Route("GET", "/ui/{path:.*}", ui.not_found, p.OPEN, exact=True),
)


def add_routes(app: web.Application, settings: Settings, front: FrontDoor) -> None:
    """Register every route, each behind the front door with its policy; last, the route
    that answers what no other route takes."""
    base = settings.base_path
    router = app.router
    policies: dict[web.AbstractRoute, Policy] = {}

    def add(route: Route, handler: Handler) -> None:
        full = base + route.path
        paths = [full]
        if not route.exact and len(full) > 1:
            paths.append(full.rstrip("/") if full.endswith("/") else full + "/")
        for path in paths:
            resource = router.add_resource(path)  # its canonical path is the route's label in /metrics
            added = resource.add_route(route.method, front.wrap(handler, route.policy, resource.canonical))
            policies[added] = route.policy

    enabled = {"train": settings.train_endpoint, "predict": settings.predict_endpoint, None: True}
    for route in ROUTES:
        add(route, route.handler if enabled[route.group] else
            handlers.disabled(route.group, f"--no-{route.group}-endpoint"))
    metrics = Route("GET", "/metrics", handlers.metrics, p.ADMIN if settings.auth and settings.metrics_auth
                    else p.OPEN, exact=True)
    add(metrics, metrics.handler)
    if settings.doc_endpoint:
        for route in DOC_ROUTES:
            add(route, route.handler)
    policies[front.add_last_resort(router)] = p.OPEN
    app[POLICIES] = policies


def policy_of(path: str, method: str) -> Policy | None:
    """The policy of a documented path (the OpenAPI document shows it)."""
    for route in (*ROUTES, *DOC_ROUTES):
        if route.method == method.upper() and route.path.rstrip("/") == path.rstrip("/"):
            return route.policy
    return None
