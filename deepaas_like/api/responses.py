"""The one way a JSON response is made, and the Open Inference Protocol's error answers."""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from ..errors import DeepaasError
from ..jsonutil import dumps_bytes

# The statuses the protocol's routes answer as they are (no such model, not now, too large);
# every other 4xx is the protocol's 400 with its "error"
PROTOCOL_KEPT_STATUSES = frozenset({404, 409, 413})


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``body`` encoded with :func:`deepaas_like.jsonutil.dumps_bytes` (numpy values and all)."""
    return web.Response(body=dumps_bytes(body), status=status, headers=headers, content_type="application/json")


def protocol_error(message: str) -> web.Response:
    """The Open Inference Protocol's error: 400 ``{"error": message}``."""
    return json_response({"error": message}, status=400)


def protocol_error_of(exc: DeepaasError) -> web.Response:
    """A domain error on a protocol route: kept statuses and 5xx as they are (with ``error``
    beside ``message``), the rest (the arguments) as the protocol's 400."""
    if exc.status in PROTOCOL_KEPT_STATUSES or exc.status >= 500:
        return json_response({**exc.body(), "error": exc.message}, exc.status, exc.headers)
    return protocol_error(exc.message)
