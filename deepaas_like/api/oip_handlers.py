"""HTTP handlers of the Open Inference Protocol (V2 REST): ``/v2/models/{name}/infer`` and
the protocol's keys in the model documents. The protocol itself is :mod:`deepaas_like.oip`."""

from __future__ import annotations

from aiohttp import web

from ..errors import DeepaasError, PayloadTooLarge
from ..oip import HEADER_LENGTH, ProtocolError, parse_request
from .keys import PLANE, SETTINGS
from .readers import version_number
from .responses import json_response, protocol_error, protocol_error_of


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
        return protocol_error(str(exc))
    except DeepaasError as exc:
        return protocol_error_of(exc)
    return json_response(answer)
