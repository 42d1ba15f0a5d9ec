"""Every route of the API, once: method, path, handler, the flag that turns it off, and its
access policy. Registration, the access check and the OpenAPI document all read this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Iterator

from aiohttp import web
from yarl import URL

from ..auth import policy as p
from ..auth.policy import Policy
from ..settings import Settings
from . import auth_handlers, docs, handlers, job_handlers, oip_handlers, quality_handlers, registry_handlers, ui
from . import explain_handlers as explaining
from .front_door import FrontDoor
from .keys import MODELS, POLICIES

if TYPE_CHECKING:  # what AbstractResource.get_info() returns (aiohttp does not export it)
    from aiohttp.web_urldispatcher import _InfoDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_VARIABLES = re.compile(r"\{[^}]*\}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._~-]+")  # written in a path as it is (no %-escapes)
HEALTH = "/v2/health/"  # probes answer whatever Host they name
EXPLAIN_INIT = "/v2/models/{name}/explanations-initialization/"  # DataRobot's name


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
    Route("DELETE", "/v2/models/{name}/predictions/{uuid}", job_handlers.cancel_prediction, p.PREDICTIONS, "predict"),
    Route(
        "GET", "/v2/models/{name}/predictions/{uuid}/result", job_handlers.prediction_result, p.PREDICTIONS, "predict"
    ),
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
    Route(
        "GET", "/v2/models/{name}/versions/{version}/dependencyBuild", registry_handlers.get_dependency_build, p.READ
    ),
    Route(
        "GET",
        "/v2/models/{name}/versions/{version}/dependencyBuildLog",
        registry_handlers.get_dependency_build_log,
        p.READ,
    ),
    Route("POST", "/v2/models/{name}/versions/{version}/predict/", handlers.predict, p.PREDICT, "predict"),
    Route(
        "POST",
        "/v2/models/{name}/versions/{version}/predictions/",
        job_handlers.submit_prediction,
        p.PREDICT_LATER,
        "predict",
    ),
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
    Route("GET", "/v2/models/{name}/tests/{uuid}/log/tail", quality_handlers.test_log_tail, p.PREDICTIONS, "predict"),
    Route("POST", "/v2/models/{name}/feature-impact/", quality_handlers.start_impact, p.PREDICT_LATER, "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/", job_handlers.list_impacts, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/{uuid}", job_handlers.get_impact, p.PREDICTIONS, "predict"),
    Route("DELETE", "/v2/models/{name}/feature-impact/{uuid}", job_handlers.cancel_impact, p.PREDICTIONS, "predict"),
    Route("GET", "/v2/models/{name}/feature-impact/{uuid}/log", quality_handlers.impact_log, p.PREDICTIONS, "predict"),
    # prediction explanations: explain as predict, the initialization as model tests
    Route("POST", "/v2/models/{name}/explain", explaining.explain, p.PREDICT, "predict"),
    Route("POST", "/v2/models/{name}/versions/{version}/explain", explaining.explain, p.PREDICT, "predict"),
    Route("POST", EXPLAIN_INIT, explaining.start_initialization, p.PREDICT_LATER, "predict"),
    Route("GET", EXPLAIN_INIT, explaining.get_initialization, p.PREDICTIONS, "predict"),
    Route("DELETE", EXPLAIN_INIT, explaining.delete_initialization, p.PREDICT_LATER, "predict"),
    Route("GET", EXPLAIN_INIT + "{uuid}", explaining.get_initialization_job, p.PREDICTIONS, "predict"),
    Route("DELETE", EXPLAIN_INIT + "{uuid}", explaining.cancel_initialization_job, p.PREDICTIONS, "predict"),
    Route("GET", EXPLAIN_INIT + "{uuid}/log", quality_handlers.explanations_log, p.PREDICTIONS, "predict"),
    Route(
        "GET",
        "/v2/models/{name}/feature-impact/{uuid}/plot.png",
        quality_handlers.impact_plot_png,
        p.PREDICTIONS,
        "predict",
    ),
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

    plugins = [name for name in app[MODELS] if _PLAIN_NAME.fullmatch(name)]
    written: dict[str, PluginPath] = {}

    def add(route: Route, handler: Handler) -> None:
        full = base + route.path
        paths = [full]
        if not route.exact and len(full) > 1:
            paths.append(full.rstrip("/") if full.endswith("/") else full + "/")
        # HEAD wherever GET: the same handler, whose body aiohttp leaves out.
        methods = [route.method, "HEAD"] if route.method == "GET" else [route.method]
        for path in paths:
            resource = router.add_resource(path)
            label = resource.canonical  # the route's label in /metrics: its path template
            for method in methods:
                wrapped = front.wrap(
                    handler, route.policy, label, method=method, any_host=route.path.startswith(HEALTH)
                )
                policies[resource.add_route(method, wrapped)] = route.policy
            if route.exact or _VARIABLES.findall(path) != ["{name}"]:
                continue
            for name in plugins:  # the same route, found at once for each served plugin
                concrete = path.replace("{name}", name)
                if concrete not in written:
                    written[concrete] = PluginPath(concrete, name)
                    router.register_resource(written[concrete])
                for method in methods:
                    wrapped = front.wrap(
                        handler, route.policy, label, model=name, method=method, any_host=route.path.startswith(HEALTH)
                    )
                    policies[written[concrete].add_route(method, wrapped)] = route.policy

    enabled = {"train": settings.train_endpoint, "predict": settings.predict_endpoint, None: True}
    for route in ROUTES:
        add(
            route,
            route.handler
            if route.group is None or enabled[route.group]
            else handlers.disabled(route.group, f"--no-{route.group}-endpoint"),
        )
    metrics = Route(
        "GET", "/metrics", handlers.metrics, p.ADMIN if settings.auth and settings.metrics_auth else p.OPEN, exact=True
    )
    add(metrics, metrics.handler)
    if settings.doc_endpoint:
        for route in DOC_ROUTES:
            add(route, route.handler)
    policies[front.add_last_resort(router)] = p.OPEN
    app[POLICIES] = policies


class PluginPath(web.AbstractResource):
    """A route whose one variable is ``{name}``, with a served plugin's name written in.

    aiohttp files a resource under its path up to the first variable, and tries the
    resources of a prefix one after another, a regular expression and a coroutine each:
    the 80-odd routes under ``/v2/models/`` made finding a metadata request's route cost
    2.7 µs and an OIP ``/infer`` 3.5 µs, against 1.0 µs in an application of one route.
    This resource is filed under its whole path, so aiohttp finds it at once, and it
    matches by comparing the path. The routes it holds are the template's own handlers,
    policies and /metrics labels; anything else (uploaded models) still finds the template.
    """

    shortcut = True  # what it takes, its template takes too (the last-resort route asks only that)

    def __init__(self, path: str, name: str) -> None:
        super().__init__()
        self._path = path
        self._model = name
        self._routes: dict[str, web.ResourceRoute] = {}
        self._allowed: set[str] = set()

    def add_route(self, method: str, handler: Handler) -> web.ResourceRoute:
        route = self._routes[method] = web.ResourceRoute(method, handler, self)
        self._allowed.add(method)
        return route

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        if request.rel_url.path_safe != self._path:
            return None, set()
        route = self._routes.get(request.method)
        if route is None:
            return None, self._allowed
        return web.UrlMappingMatchInfo({"name": self._model}, route), self._allowed

    @property
    def canonical(self) -> str:
        return self._path

    def url_for(self, **kwargs: str) -> URL:
        return URL.build(path=self._path, encoded=True)

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("a plugin's path belongs to the application itself")

    def get_info(self) -> _InfoDict:
        return {"path": self._path}

    def raw_match(self, path: str) -> bool:
        return path == self._path

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(list(self._routes.values()))


def policy_of(path: str, method: str) -> Policy | None:
    """The policy of a documented path (the OpenAPI document shows it)."""
    for route in (*ROUTES, *DOC_ROUTES):
        if route.method == method.upper() and route.path.rstrip("/") == path.rstrip("/"):
            return route.policy
    return None
