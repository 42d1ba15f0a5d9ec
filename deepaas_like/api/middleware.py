"""One middleware renders every error as JSON: ``{"message": ..., ...}``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import DeepaasError
from ..jsonutil import dumps_bytes
from .keys import SETTINGS

LOG = logging.getLogger(__name__)
_FORWARDED_HEADERS = ("Allow", "Retry-After", "Location")


def error_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps_bytes(dict(body)), status=status, headers=dict(headers or {}), content_type="application/json"
    )


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
        limit = request.app[SETTINGS].client_max_size
        return {
            "message": f"Request body too large: the limit is {limit} bytes (--client-max-size)",
            "limit": limit,
        }
    return {"message": exc.reason or exc.text or f"HTTP {exc.status}"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DeepaasError as exc:
        if exc.status >= 500:
            LOG.warning("%s %s -> %s: %s", request.method, request.path, exc.status, exc.message)
        return error_response(exc.status, exc.body(), exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in _FORWARDED_HEADERS}
        return error_response(exc.status, _http_error_body(exc, request), headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        LOG.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(500, {"message": f"Internal server error: {type(exc).__name__}: {exc}"})
