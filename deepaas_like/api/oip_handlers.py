"""HTTP handlers of the Open Inference Protocol (V2 REST): ``/v2/models/{name}/infer`` and
the protocol's keys in the model documents. The protocol itself is :mod:`deepaas_like.oip`."""

from __future__ import annotations

from aiohttp import web

from ..errors import DeepaasError, PayloadTooLarge
from ..oip import HEADER_LENGTH, ProtocolError, parse_request
from .keys import PLANE, SETTINGS
from .readers import version_number
from .responses import json_response

KEPT_STATUSES = frozenset({404, 409, 413})


def _error(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def infer(request: web.Request) -> web.Response:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: input tensors in, output tensors out
    (the work is :meth:`DataPlane.infer <deepaas_like.service.DataPlane.infer>`)."""
    plane = request.app[PLANE]
    try:
        model = await plane.model(request.match_info["name"], version_number(request))
        limit = request.app[SETTINGS].client_max_size
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(limit)
        body = await request.read()
        payload, tensors = parse_request(body, request.headers.get(HEADER_LENGTH))
        answer = await plane.infer(model, payload, tensors)
    except ProtocolError as exc:
        return _error(str(exc))
    except DeepaasError as exc:
        if exc.status in KEPT_STATUSES or exc.status >= 500:  # no such model, not now, too large
            return json_response({**exc.body(), "error": exc.message}, exc.status, exc.headers)
        return _error(exc.message)  # the arguments: the protocol's 400
    return json_response(answer)
