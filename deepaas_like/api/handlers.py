"""HTTP handlers. They only speak HTTP; the work happens in the layers below."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import DeepaasError
from ..models import ModelSet, ServedModel
from .bodies import UploadArea, read_sources
from .documents import model_document, plugin_metadata, server_metadata, uploaded_document, uploaded_metadata
from .keys import GATE, METRICS, MODELS, PLANE, PRINCIPAL, SETTINGS
from .readers import query_bool, query_int, version_number
from .rendering import send_output
from .responses import json_response

JSON = "application/json"


def base_path(request: web.Request) -> str:
    return request.app[SETTINGS].base_path


def _v2_document(request: web.Request) -> dict:
    return {
        "version": "stable",
        "id": "v2",
        "links": [{"rel": "self", "type": "application/json", "href": f"{base_path(request)}/v2/"}],
    }


async def versions(request: web.Request) -> web.Response:
    """``GET /``: the API versions and where the documentation is (DEEPaaS's shape)."""
    base = base_path(request)
    links = []
    if request.app[SETTINGS].doc_endpoint:
        links.append({"rel": "help", "type": "text/html", "href": f"{base}/api"})
    links.append({"rel": "describedby", "type": "application/json", "href": f"{base}/swagger.json"})
    return json_response({"versions": [_v2_document(request)], "links": links})


async def v2_version(request: web.Request) -> web.Response:
    """``GET /v2``: DEEPaaS's version document and the Open Inference Protocol's server metadata."""
    return json_response({**_v2_document(request), **server_metadata()})


def _model_href(request: web.Request, name: str) -> str:
    return f"{base_path(request)}/v2/models/{name}"


async def list_models(request: web.Request) -> web.Response:
    """Every model: plugins, then uploaded models (``source`` says which); ``?deleted=true``
    lists the archived uploads; ``?limit=&offset=`` paginate (the total in X-Total-Count)."""
    models = request.app[MODELS]
    deleted = query_bool(request, "deleted")
    limit, offset = query_int(request, "limit", 1000, 1, 1000), query_int(request, "offset", 0, 0, None)
    gate, principal = request.app[GATE], request[PRINCIPAL]
    docs = (
        []
        if deleted
        else [m.document(_model_href(request, m.name)) for m in models.values() if gate.sees_model(principal, m.name)]
    )
    if not deleted:  # installed plugins that could not be loaded: listed, with why
        docs += [
            models.broken_document(name, _model_href(request, name))
            for name in sorted(models.broken)
            if gate.sees_model(principal, name)
        ]
    uploads = models.uploads
    if uploads is not None:
        docs += [
            model_document(uploads, record, base_path(request))
            for record in uploads.models(deleted=deleted)
            if gate.sees_model(principal, record.name)
        ]
    return json_response({"models": docs[offset : offset + limit]}, headers={"X-Total-Count": str(len(docs))})


async def get_model(request: web.Request) -> web.Response:
    """A model's metadata: a plugin's (DEEPaaS's shape), or an uploaded model's record."""
    models, name = request.app[MODELS], request.match_info["name"]
    if name not in models and models.is_uploaded(name):  # with the protocol's keys, for both kinds of client
        return json_response({**uploaded_document(request, name), **uploaded_metadata(request, name)})
    model = models.get_model(name)
    return web.Response(
        body=model.encoded_document(_model_href(request, model.name), lambda: plugin_metadata(model)), content_type=JSON
    )


async def predict(request: web.Request) -> web.StreamResponse:
    """``POST /v2/models/{name}/predict/``: validate the arguments, run, answer."""
    plane = request.app[PLANE]
    model = await plane.model(request.match_info["name"], version_number(request))
    uploads = UploadArea()
    try:
        sources = await read_sources(request, model.predict_args, uploads, request.app[SETTINGS].client_max_size)
        return await send_output(request, await plane.predict(model, sources))
    finally:
        uploads.remove()


def disabled(what: str, flag: str):
    async def handler(request: web.Request) -> web.Response:
        raise DeepaasError(f"The {what} endpoint is disabled on this server ({flag})", status=404)

    return handler


async def health_live(request: web.Request) -> web.Response:
    """Liveness: the server answers."""
    return json_response({"status": "alive"})


def _readiness(model: ServedModel) -> dict:
    entry = {
        "name": model.name,
        "ready": model.is_ready,
        "state": model.state,
        **model.runner.describe(),
        "waiting": model.waiting,
    }
    if model.error:
        entry["error"] = model.error
    return entry


def readiness(models: ModelSet) -> tuple[int, dict]:
    """200 only when every served model is warm and has a live worker; each model's detail.
    Plugins that could not be loaded are named under ``failed`` (they are not served, so they
    do not hold readiness back: the others serve)."""
    entries = {m.name: _readiness(m) for m in models.values()}
    all_ready = bool(entries) and all(m["ready"] for m in entries.values())
    body: dict = {"status": "ready" if all_ready else "not ready", "models": entries}
    if models.broken:
        body["failed"] = {name: {"state": "failed", "error": error.reason} for name, error in models.broken.items()}
    return (200 if all_ready else 503), body


async def health_ready(request: web.Request) -> web.Response:
    """Readiness: 200 only when every served model is warm and has a live worker."""
    status, body = readiness(request.app[MODELS])
    return json_response(body, status=status)


async def model_ready(request: web.Request) -> web.Response:
    """Readiness of one model (the Open Inference Protocol's ``/v2/models/{name}/ready``)."""
    models, name, version = request.app[MODELS], request.match_info["name"], version_number(request)
    entry = _readiness(await models.servable(name, version))  # a plugin's one version is 1
    return json_response(entry, status=200 if entry["ready"] else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the server's metrics."""
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
