"""The one way a JSON response is made."""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from ..jsonutil import dumps_bytes


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``body`` encoded with :func:`deepaas_like.jsonutil.dumps_bytes` (numpy values and all)."""
    return web.Response(body=dumps_bytes(body), status=status, headers=headers, content_type="application/json")
