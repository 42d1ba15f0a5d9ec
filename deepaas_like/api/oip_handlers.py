"""HTTP handlers of the Open Inference Protocol (V2 REST): ``/v2/models/{name}/infer`` and
the protocol's keys in the model documents. The protocol itself is :mod:`deepaas_like.oip`."""

from __future__ import annotations

from aiohttp import web

from ..errors import DeepaasError, PayloadTooLarge
from ..oip import HEADER_LENGTH, ProtocolError, parse_request
from .keys import PLANE, SETTINGS
from .readers import version_number
from .responses import json_response, protocol_error, protocol_error_of

PREALLOCATED = 1 << 16  # a body at least this large is read into one buffer of its declared length


async def infer(request: web.Request) -> web.Response:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: input tensors in, output tensors out
    (the work is :meth:`DataPlane.infer <deepaas_like.service.DataPlane.infer>`)."""
    plane = request.app[PLANE]
    try:
        model = await plane.model(request.match_info["name"], version_number(request))
        limit = request.app[SETTINGS].client_max_size
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(limit)
        body = await read_body(request)
        payload, tensors = parse_request(body, request.headers.get(HEADER_LENGTH))
        answer = await plane.infer(model, payload, tensors)
    except ProtocolError as exc:
        return protocol_error(str(exc))
    except DeepaasError as exc:
        return protocol_error_of(exc)
    return json_response(answer)


async def read_body(request: web.Request) -> bytes | bytearray:
    """The request's body. A large one of known length is read into one buffer of that length:
    each chunk the connection received is copied once (aiohttp's ``read()`` grows a buffer
    chunk by chunk, copying a 10 MB body about eight times over, then copies it once more
    into ``bytes``). Its tensors are then views of that buffer (see :mod:`deepaas_like.oip`)."""
    length = request.content_length
    if length is None or length < PREALLOCATED or request.headers.get("Content-Encoding"):
        return await request.read()
    body = bytearray(length)
    view, got = memoryview(body), 0
    while chunk := await request.content.readany():
        if got + len(chunk) > length:
            raise ProtocolError(f"the body is longer than its Content-Length of {length} bytes")
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    if got != length:
        raise ProtocolError(f"the body ended after {got} of its {length} bytes")
    return body
