"""HTTP handlers of the Open Inference Protocol (V2 REST): ``/v2/models/{name}/infer`` and
the protocol's keys in the model documents. The protocol itself is :mod:`deepaas_like.oip`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import DeepaasError, PayloadTooLarge
from ..oip import HEADER_LENGTH, ProtocolError, output_tensors, parse_request, rows_from_tensors
from .keys import MODELS, SETTINGS
from .readers import version_number
from .responses import json_response

KEPT_STATUSES = frozenset({404, 409, 413})


def _error(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def infer(request: web.Request) -> web.Response:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: input tensors in, output tensors out."""
    name = request.match_info["name"]
    try:
        model = await request.app[MODELS].servable(name, version_number(request))
        limit = request.app[SETTINGS].client_max_size
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(limit)
        body = await request.read()
        payload, tensors = parse_request(body, request.headers.get(HEADER_LENGTH))
        parameters = payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError("parameters must be an object")
        arguments = [a for a in model.predict_args.accepted if a != "accept"]
        uploaded = model.rows_args is not None
        width = len(arguments) if uploaded else None
        rows, _ = rows_from_tensors(tensors, arguments, width, parameters)
        answers = await model.predict_rows(rows)
        names = _requested_outputs(payload.get("outputs"))
        outputs = output_tensors(answers, names)
    except ProtocolError as exc:
        return _error(str(exc))
    except DeepaasError as exc:
        if exc.status in KEPT_STATUSES or exc.status >= 500:  # no such model, not now, too large
            return json_response({**exc.body(), "error": exc.message}, exc.status, exc.headers)
        return _error(exc.message)  # the arguments: the protocol's 400
    answer: dict[str, Any] = {"model_name": name, "outputs": outputs}
    if model.metadata.get("version") is not None and model.rows_args is not None:
        answer["model_version"] = str(model.metadata["version"])
    if "id" in payload:
        answer["id"] = payload["id"]
    if parameters:
        answer["parameters"] = parameters
    return json_response(answer)


def _requested_outputs(wanted: Any) -> list[str] | None:
    if wanted is None:
        return None
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise ProtocolError("outputs must be a list of objects with a name")
    return [o["name"] for o in wanted]
