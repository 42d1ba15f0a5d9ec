"""One middleware renders every error as JSON: ``{"message": ..., ...}``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import DeepaasError, PayloadTooLarge
from .keys import SETTINGS, WARNINGS
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
        return PayloadTooLarge(request.app[SETTINGS].client_max_size).body()
    return {"message": exc.reason or exc.text or f"HTTP {exc.status}"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DeepaasError as exc:
        if exc.status >= 500:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else request.path
            request.app[WARNINGS].warn((exc.status, route, type(exc).__name__),
                                       "%s %s -> %s: %s", request.method, request.path, exc.status, exc.message)
        return json_response(exc.body(), exc.status, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in _FORWARDED_HEADERS}
        return json_response(_http_error_body(exc, request), exc.status, headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        LOG.exception("unexpected error answering %s %s", request.method, request.path)
        return json_response({"message": f"Internal server error: {type(exc).__name__}: {exc}"}, 500)
