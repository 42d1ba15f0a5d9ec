"""HTTP handlers of the model registry: upload, versions, download, config, archive.

The native routes live under ``/v2/models/{name}``; the Neurodeploy-style routes under
``/ml-models`` answer in that platform's shapes. Predictions of uploaded models use the
ordinary predict handlers (the catalog finds the model).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from aiohttp import BodyPartReader, web

from ..auth.policy import OWN, UPLOAD
from ..auth.principal import Scope
from ..errors import ArgumentError, BadRequest, DeepaasError, NotFound
from ..jobs.model import Job, JobKind
from ..jsonutil import stamp
from ..registry.intake import (
    NEURODEPLOY_LIBRARY,
    SAFE_FORMATS,
    Upload,
    check_name,
    check_requirements,
    check_schema,
)
from ..registry.records import DependencyBuild, ModelRecord, VersionRecord, VersionStatus
from ..registry.service import Registry
from ..settings import parse_bool
from . import plugin_versions
from .bodies import form_parts, read_field, read_json_object
from .documents import model_document, uploaded_metadata
from .keys import GATE, JOBS, PRINCIPAL
from .readers import base, query_bool, query_int, registry, route_version
from .rendering import send_file
from .responses import json_response

CHUNK = 256 * 1024
FIELD_LIMIT = 1024 * 1024
UPLOAD_FIELDS = (
    "file",
    "library",
    "filetype",
    "is_public",
    "description",
    "input_schema",
    "output_schema",
    "optimize",
    "requirements",
)


def _version_href(request: web.Request, version: VersionRecord) -> str:
    return f"{base(request)}/v2/models/{version.model}/versions/{version.number}"


def _version_doc(request: web.Request, version: VersionRecord) -> dict[str, Any]:
    return version.document(_version_href(request, version))


# --- upload ------------------------------------------------------------------------


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _stream_chunks(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(CHUNK):
        yield chunk


async def _read_upload(request: web.Request, reg: Registry) -> Upload:
    """The multipart body of ``PUT /v2/models/{name}``; the file streamed to the artifact store."""
    if request.content_type != "multipart/form-data":
        raise ArgumentError(
            "Upload a model as multipart/form-data with a 'file' part (curl -F file=@model.joblib)",
            {"file": ["Missing data for required field."]},
        )
    values: dict[str, str] = {}
    upload: Upload | None = None
    try:
        async for part in form_parts(request):
            if part.name not in UPLOAD_FIELDS:
                raise ArgumentError(
                    f"Unknown upload field {part.name!r}; accepted: {', '.join(UPLOAD_FIELDS)}",
                    {part.name or "": ["Unknown field."]},
                    accepted=list(UPLOAD_FIELDS),
                )
            if part.name == "file":
                if upload is not None:
                    raise ArgumentError("Send one file per upload", {"file": ["Only one file."]})
                upload = Upload(await reg.artifacts.stage(_part_chunks(part)), filename=part.filename)
            else:  # read no more than the limit: a field is not a place for megabytes
                values[part.name] = (await read_field(part, FIELD_LIMIT)).decode("utf-8", errors="replace")
        if upload is None or upload.artifact.size == 0:
            raise ArgumentError(
                "The upload has no model file: send it as the 'file' part",
                {"file": ["Missing data for required field."]},
            )
        _apply_fields(upload, values)
        return upload
    except BaseException as exc:
        if upload is not None:
            reg.discard(upload.artifact)
        if isinstance(exc, (DeepaasError, asyncio.CancelledError)) or not isinstance(exc, Exception):
            raise
        raise BadRequest(f"Malformed multipart body: {type(exc).__name__}: {exc}") from None


def _apply_fields(upload: Upload, values: dict[str, str]) -> None:
    errors: dict[str, list[str]] = {}
    upload.library = values.get("library") or None
    upload.filetype = values.get("filetype") or None
    upload.description = values.get("description")
    upload.optimize = values.get("optimize") or None
    if values.get("is_public"):
        try:
            upload.is_public = parse_bool(values["is_public"])
        except ValueError:
            errors["is_public"] = ["Not a valid boolean."]
    if errors:
        raise ArgumentError(f"Invalid upload fields: {', '.join(errors)}", errors)
    upload.input_schema = check_schema("input_schema", values.get("input_schema"))
    upload.output_schema = check_schema("output_schema", values.get("output_schema"))
    upload.requirements = check_requirements(values.get("requirements"))


async def put_model(request: web.Request) -> web.Response:
    """``PUT /v2/models/{name}``: create the model (201) or add a version (200); a version
    with requirements is answered at once (202), while its environment builds."""
    name = check_name(request.match_info["name"])
    reg = registry(request)
    reg.check_writable(name)
    created, model, version = await _record_upload(request, reg, name, await _read_upload(request, reg))
    body = {**model_document(reg, model, base(request)), "version": _version_doc(request, version)}
    build = version.build
    if version.status is VersionStatus.BUILDING and build is not None:
        href = _version_href(request, version)
        body["dependencyBuild"] = _build_doc(version, build, href)
        return json_response(body, status=202, headers={"Location": f"{href}/dependencyBuild"})
    if version.error:
        body = {
            "message": f"Version {version.number} of model '{name}' was stored but does not load: {version.error}",
            **body,
        }
        return json_response(body, status=422)
    return json_response(
        body, status=201 if created else 200, headers={"Location": f"{base(request)}/v2/models/{name}"}
    )


# --- model ----------------------------------------------------------------------------


async def patch_model(request: web.Request) -> web.Response:
    """``PATCH /v2/models/{name}``: ``current_version``, ``is_public``, ``description`` (a
    plugin: ``current_version``, see :mod:`.plugin_versions`)."""
    plugin = plugin_versions.plugin_of(request)
    if plugin is not None:
        return await plugin_versions.patch_model(request, plugin)
    name = request.match_info["name"]
    registry(request).check_writable(name)
    body = await read_json_object(request)
    known = {"current_version", "is_public", "description"}
    errors = {key: ["Unknown field."] for key in sorted(set(body) - known)}
    version = body.get("current_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        errors["current_version"] = ["Must be a version number."]
    if "is_public" in body and not isinstance(body["is_public"], bool):
        errors["is_public"] = ["Must be true or false."]
    if "description" in body and not isinstance(body["description"], str):
        errors["description"] = ["Must be a string."]
    if errors:
        raise ArgumentError(f"Invalid fields: {', '.join(errors)}; accepted: {', '.join(sorted(known))}", errors)
    reg = registry(request)
    if "is_public" in body:  # who may see the model: its owner decides
        request.app[GATE].authorize(request[PRINCIPAL], OWN, name)
    model = await reg.update(
        name, current_version=version, is_public=body.get("is_public"), description=body.get("description")
    )
    await _audit(request, "model.update", name, body)
    if "is_public" in body:
        await _audit(request, "model.visibility", name, {"is_public": model.is_public})
    return json_response(model_document(reg, model, base(request)))


async def delete_model(request: web.Request) -> web.Response:
    """Archive (files and history kept), or with ``?purge=true`` delete for good."""
    name = request.match_info["name"]
    reg = registry(request)
    reg.check_writable(name)
    purge = query_bool(request, "purge")
    if purge:
        await reg.purge(name)
        await _audit(request, "model.purge", name, {})
        return json_response({"message": f"Model '{name}' and every version of it were deleted", "model": name})
    model = await reg.archive(name)
    await _audit(request, "model.archive", name, {})
    return json_response(model_document(reg, model, base(request)))


async def restore_model(request: web.Request) -> web.Response:
    reg = registry(request)
    reg.check_writable(request.match_info["name"])
    model = await reg.restore(request.match_info["name"])
    await _audit(request, "model.restore", model.name, {})
    return json_response(model_document(reg, model, base(request)))


# --- versions ---------------------------------------------------------------------------


async def list_versions(request: web.Request) -> web.Response:
    plugin = plugin_versions.plugin_of(request)
    if plugin is not None:  # what its trainings left
        return await plugin_versions.list_versions(request, plugin)
    versions = registry(request).versions(request.match_info["name"])
    return json_response({"versions": [_version_doc(request, v) for v in versions]})


async def get_version(request: web.Request) -> web.Response:
    """A version's record, with the Open Inference Protocol's model metadata of it."""
    plugin = plugin_versions.plugin_of(request)
    if plugin is not None:
        return await plugin_versions.get_version(request, plugin)
    number = route_version(request)
    name = request.match_info["name"]
    version = registry(request).version(name, number)
    return json_response(
        {**_version_doc(request, version), "name": version.model, **uploaded_metadata(request, version.model, number)}
    )


async def download_version(request: web.Request) -> web.StreamResponse:
    """The exact bytes that were uploaded, as an attachment (a plugin's version: its files as a tar)."""
    plugin = plugin_versions.plugin_of(request)
    if plugin is not None:
        return await plugin_versions.download_version(request, plugin)
    reg = registry(request)
    version = reg.version(request.match_info["name"], route_version(request))
    filename = version.filename or f"{version.model}-v{version.number}.{version.filetype}"
    response = await send_file(
        request,
        str(reg.artifacts.path(version.sha256)),
        "application/octet-stream",
        filename,
        disposition="attachment",
        extra_headers={"X-Content-SHA256": version.sha256},
    )
    return response


def _build_doc(version: VersionRecord, build: DependencyBuild, href: str) -> dict[str, Any]:
    return {"model": version.model, "version": version.number, **build.document(href, version.requirements or [])}


def _build_of(request: web.Request) -> tuple[VersionRecord, DependencyBuild]:
    version = registry(request).version(request.match_info["name"], route_version(request))
    build = version.build
    if build is None:
        raise NotFound(
            f"Version {version.number} of model '{version.model}' was uploaded without requirements: it runs in "
            "the server's environment, and has no dependency build",
            details={"model": version.model, "version": version.number},
        )
    return version, build


async def get_dependency_build(request: web.Request) -> web.Response:
    """``GET .../versions/{n}/dependencyBuild``: the build of the version's environment
    (DataRobot's shape: ``buildStatus`` submitted, processing, success or failed)."""
    version, build = _build_of(request)
    return json_response(_build_doc(version, build, _version_href(request, version)))


async def get_dependency_build_log(request: web.Request) -> web.Response:
    """``GET .../versions/{n}/dependencyBuildLog``: what the build ran and uv printed, so
    far; ``?offset=N`` skips the first N bytes."""
    version, build = _build_of(request)
    offset = query_int(request, "offset", 0, 0, None)
    jobs = request.app[JOBS]
    job = await jobs.find(JobKind.BUILD, version.model, build.job)
    data = await jobs.read_log(job, offset)
    return web.Response(
        body=data,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Log-Size": str(offset + len(data)), "X-Build-Status": build.status},
    )


async def get_config(request: web.Request) -> web.Response:
    version = registry(request).version(request.match_info["name"], route_version(request))
    return json_response(_config(version))


async def put_config(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    version = await registry(request).set_config(request.match_info["name"], route_version(request), body)
    await _audit(request, "version.config", version.model, {"version": version.number, "config": version.config})
    return json_response(_config(version))


def _config(version: VersionRecord) -> dict[str, Any]:
    return {key: version.config.get(key) for key in ("input_schema", "output_schema", "batching", "requirements")}


# --- the Neurodeploy-style routes -------------------------------------------------------


def _neuro(model: ModelRecord, reg: Registry) -> dict[str, Any]:
    current = reg.current(model.name) if model.name in reg else None
    return {
        "model_name": model.name,
        "library": NEURODEPLOY_LIBRARY.get(current.library) if current else None,
        "filetype": current.filetype if current else None,
        "is_public": model.is_public,
        "created_at": stamp(model.created),
        "updated_at": stamp(model.last_predict),
    }


async def ml_models(request: web.Request) -> web.Response:
    """``GET /ml-models?limit=10&deleted=&used=``: ``{"models": [...]}`` (updated_at: the last predict)."""
    reg = registry(request)
    limit = query_int(request, "limit", 10, 1, 1000)
    deleted = query_bool(request, "deleted")
    used = request.query.get("used")
    gate, principal = request.app[GATE], request[PRINCIPAL]  # as GET /v2/models/: what the caller may see
    models = [m for m in reg.models(deleted=deleted) if gate.sees_model(principal, m.name)]
    if used is not None:
        wanted = query_bool(request, "used")
        models = [m for m in models if (m.last_predict is not None) == wanted]
    return json_response({"models": [_neuro(m, reg) for m in models[:limit]]})


async def ml_model(request: web.Request) -> web.Response:
    reg = registry(request)
    return json_response(_neuro(reg.record(request.match_info["name"]), reg))


async def ml_model_put(request: web.Request) -> web.Response:
    """``PUT /ml-models/{name}?lib=&filetype=&is_public=`` with the file as the body."""
    name = check_name(request.match_info["name"])
    reg = registry(request)
    query = request.query
    reg.check_writable(name)
    is_public = query_bool(request, "is_public") if "is_public" in query else None
    upload = Upload(
        await reg.artifacts.stage(_stream_chunks(request)),
        library=query.get("lib") or None,
        filetype=query.get("filetype") or None,
        filename=query.get("filename"),
        is_public=is_public,
    )
    if upload.artifact.size == 0:
        reg.discard(upload.artifact)
        raise ArgumentError("The request body is the model file, and it is empty", {"file": ["Empty."]})
    _, model, version = await _record_upload(request, reg, name, upload)
    if version.error:
        raise ArgumentError(
            f"The file was stored as version {version.number} but does not load: {version.error}",
            {"file": [version.error]},
        )
    return json_response(
        {
            "model_name": name,
            "model_type": NEURODEPLOY_LIBRARY.get(version.library, version.library),
            "persistence_type": version.filetype,
            "uploaded_at": stamp(version.created),
        }
    )


async def ml_model_delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    registry(request).check_writable(name)
    await registry(request).archive(name)
    await _audit(request, "model.archive", name, {})
    return json_response({"message": f"deleted model {name}"})


async def _record_upload(
    request: web.Request, reg: Registry, name: str, upload: Upload
) -> tuple[bool, ModelRecord, VersionRecord]:
    """The stored file as the model's next version (the file is dropped if that fails); audited.

    What the caller may do is checked first: a format whose loading runs code, or requirements
    to install, need the ``models:write-code`` scope, and only the model's owner changes whether
    it is public. A version with requirements is built by a durable job (:meth:`Registry.build`)."""
    principal = request[PRINCIPAL]
    gate = request.app[GATE]
    try:
        upload.library, upload.filetype = reg.identify(upload)
        if reg.runs_code(upload.library, upload.filetype):
            gate.require(
                principal,
                Scope.WRITE_CODE,
                f"loading a {upload.filetype} file runs code, so uploading one",
                f"Upload the model as {SAFE_FORMATS}: they need only {Scope.WRITE}",
            )
        if upload.requirements:
            gate.require(
                principal,
                Scope.WRITE_CODE,
                "installing packages runs their code (a source distribution is built on the server), so "
                "uploading with requirements",
                f"Upload without requirements (the server's libraries load the file): that needs only {Scope.WRITE}",
            )
        visibility = upload.is_public is not None and name in reg
        if visibility:
            gate.authorize(principal, OWN, name)  # an existing model's visibility: its owner decides
        created, model, version = await reg.upload(
            name,
            upload,
            owner=principal.identity,
            may_publish=visibility,
            may_add_version=lambda: gate.authorize(principal, UPLOAD, name),
        )  # the model as it is then
    except BaseException:
        reg.discard(upload.artifact)
        raise
    build = version.build
    if version.status is VersionStatus.BUILDING and build is not None:  # a durable job, with its log
        await request.app[JOBS].submit_task(
            JobKind.BUILD,
            reg.job_model(model, version),
            build.job,
            {"version": version.number, "requirements": version.requirements},
            lambda job, log: _build(reg, job, log),
            owner=principal.identity,
        )
    await _audit(
        request,
        "model.upload",
        name,
        {
            "version": version.number,
            "sha256": version.sha256,
            "filetype": version.filetype,
            "status": version.status,
            "created": created,
        },
    )
    if created or visibility:
        await _audit(request, "model.visibility", name, {"is_public": model.is_public})
    return created, model, version


async def _build(reg: Registry, job: Job, log: Callable[[str], None]) -> dict[str, Any]:
    return await reg.build(job.model, job.args["version"], log)


async def _audit(request: web.Request, action: str, target: str, detail: dict[str, Any]) -> None:
    await request.app[GATE].audit(request[PRINCIPAL], action, target, detail)


# --- small readers ----------------------------------------------------------------------
