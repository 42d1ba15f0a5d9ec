"""The front door: one middleware records every request's metrics and renders every
error as JSON: ``{"message": ..., ...}``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ..auth.gate import Gate
from ..auth.policy import OPEN
from ..errors import DeepaasError, Forbidden, PayloadTooLarge
from ..models import ModelNotFound
from .keys import POLICIES, PRINCIPAL, SETTINGS, WARNINGS
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


def front_door(metrics: Metrics, gate: Gate) -> Middleware:
    """The application's only middleware: who calls and whether the route's policy lets
    them, errors as JSON, each answer counted and timed."""

    policies: dict | None = None

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal policies
        started = time.perf_counter()
        try:
            principal = request[PRINCIPAL] = (
                gate.identify(request.headers.get(hdrs.AUTHORIZATION)) if gate.enabled else gate.open_principal)
            match = request.match_info
            if policies is None:
                policies = request.app[POLICIES]
            policy = policies.get(match.route)
            if policy is None:  # a route without a policy: closed (a 404 or 405 of the router: open)
                if match.http_exception is None:
                    raise Forbidden(f"No access policy is declared for {request.method} {request.path}")
                policy = OPEN
            gate.authorize(principal, policy, match.get("name"))
            response = await handler(request)
        except DeepaasError as exc:
            if isinstance(exc, ModelNotFound) and gate.enabled and PRINCIPAL in request:
                # it names the served models: only those the caller may know of
                exc = exc.seen_by(functools.partial(gate.sees_model, request[PRINCIPAL]))
            response = _domain_error(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect
                metrics.observe(request, exc.status, time.perf_counter() - started)
                raise
            headers = {k: v for k, v in exc.headers.items() if k in _FORWARDED_HEADERS}
            response = json_response(_http_error_body(exc, request), exc.status, headers)
        except (asyncio.CancelledError, ConnectionResetError):  # the client went away
            metrics.observe(request, 500, time.perf_counter() - started)
            raise
        except Exception as exc:
            LOG.exception("unexpected error answering %s %s", request.method, request.path)
            response = json_response({"message": f"Internal server error: {type(exc).__name__}: {exc}"}, 500)
        metrics.observe(request, response.status, time.perf_counter() - started)
        return response

    return handle


def _domain_error(request: web.Request, exc: DeepaasError) -> web.Response:
    if exc.status >= 500:  # worth a warning; a flood of them is counted, not logged line by line
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        request.app[WARNINGS].warn((exc.status, route, type(exc).__name__),
                                   "%s %s -> %s: %s", request.method, request.path, exc.status, exc.message)
    return json_response(exc.body(), exc.status, exc.headers)
