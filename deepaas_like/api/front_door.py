"""The front door: every route's handler runs inside it. It checks access, records the
request's metrics and renders every error as JSON: ``{"message": ..., ...}``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Iterator

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from ..auth.gate import Gate
from ..auth.policy import OPEN, Policy
from ..errors import DeepaasError, PayloadTooLarge
from ..models import ModelNotFound
from .keys import PRINCIPAL, SETTINGS, WARNINGS
from .metrics import Metrics
from .responses import json_response

LOG = logging.getLogger(__name__)
_FORWARDED_HEADERS = ("Allow", "Retry-After", "Location")


def _http_error_body(exc: web.HTTPException, request: web.Request) -> dict[str, Any]:
    if isinstance(exc, web.HTTPNotFound):
        return {"message": f"Not found: {request.method} {request.path}. The API is described at /swagger.json"}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return {
            "message": f"Method {exc.method} is not allowed for {request.path}; allowed: {allowed}",
            "allowed": sorted(exc.allowed_methods),
        }
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        if "form fields" in (exc.text or ""):  # aiohttp's own limit on an urlencoded form
            return {"message": f"{exc.text} Send that many values as JSON or multipart/form-data"}
        return PayloadTooLarge(request.app[SETTINGS].client_max_size).body()
    return {"message": exc.reason or exc.text or f"HTTP {exc.status}"}


class FrontDoor:
    """What every request goes through, its route's handler wrapped in it: who calls and
    whether the route's policy lets them, errors as JSON, each answer counted and timed.

    Each handler is wrapped once, when its route is registered, with its policy and its
    metrics label bound. As an aiohttp middleware, the same work cost more on every
    request: aiohttp adds a middleware of its own beside any, and looks the chain up,
    and the route's policy had to be found. Requests that match no route reach the
    last-resort route (:meth:`add_last_resort`).
    """

    def __init__(self, metrics: Metrics, gate: Gate) -> None:
        self._metrics = metrics
        self._gate = gate

    def wrap(self, handler: Handler, policy: Policy, label: str, model: str | None = None) -> Handler:
        """``handler`` behind the front door, under ``policy``; ``label``: its route in /metrics;
        ``model``: the model every request of this route names, if it is known already."""
        gate = self._gate
        observe = self._metrics.observe if model is None else self._metrics.observer(model)
        checks, identifies, anyone = gate.checks(policy), gate.enabled, gate.open_principal

        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                principal = request[PRINCIPAL] = (
                    gate.identify(request.headers.get(hdrs.AUTHORIZATION)) if identifies else anyone)
                if checks:
                    gate.authorize(principal, policy, request.match_info.get("name"))
                response = await handler(request)
            except DeepaasError as exc:
                if isinstance(exc, ModelNotFound) and gate.enabled and PRINCIPAL in request:
                    # it names the served models: only those the caller may know of
                    exc = exc.seen_by(functools.partial(gate.sees_model, request[PRINCIPAL]))
                response = _domain_error(request, label, exc)
            except web.HTTPException as exc:
                if exc.status < 400:  # a redirect
                    observe(request, label, exc.status, time.perf_counter() - started)
                    raise
                headers = {k: v for k, v in exc.headers.items() if k in _FORWARDED_HEADERS}
                response = json_response(_http_error_body(exc, request), exc.status, headers)
            except (asyncio.CancelledError, ConnectionResetError):  # the client went away
                observe(request, label, 500, time.perf_counter() - started)
                raise
            except Exception as exc:
                LOG.exception("unexpected error answering %s %s", request.method, request.path)
                response = json_response({"message": f"Internal server error: {type(exc).__name__}: {exc}"}, 500)
            observe(request, label, response.status, time.perf_counter() - started)
            return response

        return handle

    def add_last_resort(self, router: web.UrlDispatcher) -> web.AbstractRoute:
        """Register, after every other route, the one that takes what they did not: its
        answer is the JSON 404, or the 405 with ``Allow`` if the path has other methods."""
        resource = _Everything(self.wrap(_unmatched, OPEN, UNMATCHED))
        router.register_resource(resource)
        return resource.route


UNMATCHED = "unmatched"  # the route label of requests that match no route


async def _unmatched(request: web.Request) -> web.StreamResponse:
    allowed: set[str] = set()
    for resource in request.app.router.resources():  # a shortcut's template answers for it
        if not isinstance(resource, _Everything) and not getattr(resource, "shortcut", False):
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


class _Everything(web.AbstractResource):
    """A resource that matches every method and path. aiohttp looks a path's resources up
    by its prefixes, longest first, and this one is filed under the shortest, ``/``: it
    is tried last."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.route = web.ResourceRoute(hdrs.METH_ANY, handler, self)

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("the last-resort route has no URL")

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, set[str]]:
        return web.UrlMappingMatchInfo({}, self.route), set()

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the last-resort route belongs to the application itself")

    def get_info(self) -> dict[str, Any]:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        yield self.route


def _domain_error(request: web.Request, route: str, exc: DeepaasError) -> web.Response:
    if exc.status >= 500:  # worth a warning; a flood of them is counted, not logged line by line
        request.app[WARNINGS].warn((exc.status, route, type(exc).__name__),
                                   "%s %s -> %s: %s", request.method, request.path, exc.status, exc.message)
    return json_response(exc.body(), exc.status, exc.headers)
