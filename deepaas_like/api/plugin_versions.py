"""HTTP handlers of a plugin's versions (what its trainings left in its storage_dir, see
:mod:`deepaas_like.jobs.versions`): the registry's version routes answer for plugins through
these, in the shapes an upload's versions have where they mean the same."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..errors import ArgumentError
from ..jobs.versions import check_version_number
from ..models import ServedModel
from .bodies import read_json_object
from .documents import plugin_metadata
from .keys import GATE, JOBS, MODELS, PRINCIPAL
from .readers import base, route_version
from .responses import json_response


def plugin_of(request: web.Request) -> ServedModel | None:
    """The plugin the route names, or None (an uploaded model, or none: the registry answers)."""
    return request.app[MODELS].get(request.match_info["name"])


def _href(request: web.Request, name: str, number: int) -> str:
    return f"{base(request)}/v2/models/{name}/versions/{number}"


async def list_versions(request: web.Request, model: ServedModel) -> web.Response:
    """``GET /v2/models/{name}/versions/``: the kept versions, oldest first (version 1 alone,
    unrecorded, before the first training)."""
    versions = request.app[JOBS].versions
    snaps = await asyncio.to_thread(versions.snapshots, model.name)
    current = model.version
    if not snaps:
        docs = [versions.document(model.name, None, _href(request, model.name, 1), current)]
    else:
        docs = [versions.document(model.name, s, _href(request, model.name, s.number), current) for s in snaps]
    return json_response({"versions": docs, "current_version": current})


async def get_version(request: web.Request, model: ServedModel) -> web.Response:
    """``GET .../versions/{n}``: the version's document, with the protocol's model metadata."""
    number = route_version(request)
    versions = request.app[JOBS].versions
    snap = await asyncio.to_thread(versions.snapshot, model.name, number)
    doc = versions.document(model.name, snap, _href(request, model.name, number), model.version)
    return json_response({**doc, "name": model.name, **plugin_metadata(model)})


async def download_version(request: web.Request, model: ServedModel) -> web.StreamResponse:
    """``GET .../versions/{n}/download``: the version's files as a tar, streamed from the
    store (nothing written meanwhile)."""
    number = route_version(request)
    versions = request.app[JOBS].versions
    snap = await asyncio.to_thread(versions.snapshot, model.name, number)
    if snap is None:
        raise versions.not_recorded(model.name)
    size, chunks = await asyncio.to_thread(versions.tar, model.name, snap)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="{model.name}-v{number}.tar"',
        }
    )
    response.content_length = size
    await response.prepare(request)
    try:
        if request.method != "HEAD":
            while chunk := await asyncio.to_thread(next, chunks, b""):
                await response.write(chunk)
    finally:
        chunks.close()
    await response.write_eof()
    return response


async def patch_model(request: web.Request, model: ServedModel) -> web.Response:
    """``PATCH /v2/models/{name} {"current_version": n}``: the plugin serves version ``n``
    once its workers are warm from it (404 unknown version, 409 while a training runs)."""
    body = await read_json_object(request)
    errors: dict[str, Any] = {
        key: ["A plugin's versions are all that changes here."] for key in sorted(set(body) - {"current_version"})
    }
    if "current_version" not in body:
        errors["current_version"] = ["Missing data for required field."]
    if errors:
        raise ArgumentError(
            f"Invalid fields: {', '.join(errors)}; a plugin takes only current_version",
            errors,
            accepted=["current_version"],
        )
    number = check_version_number(body["current_version"])
    await model.wait_ready()
    previous = await request.app[JOBS].versions.switch(model, number)
    await request.app[GATE].audit(
        request[PRINCIPAL], "model.version", model.name, {"current_version": number, "previous": previous}
    )
    href = f"{base(request)}/v2/models/{model.name}"
    return json_response({**model.document(href), **plugin_metadata(model)})
