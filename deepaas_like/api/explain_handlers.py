"""HTTP handlers of prediction explanations: explain a prediction, and the model's
explanations initialization (its background rows, a durable job)."""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web
from multidict import MultiDict

from ..arguments import ArgumentSources
from ..errors import ArgumentError, DeepaasError, NotFound
from ..jobs.model import Job, JobKind
from ..models import ServedModel
from ..oip import ProtocolError, parse_request
from ..quality.explanations import OPTIONS, explain_options
from .bodies import UploadArea, read_sources
from .job_handlers import job_of
from .keys import JOBS, PLANE, PRINCIPAL, SETTINGS
from .readers import options_and_rows, version_number
from .responses import json_response, protocol_error, protocol_error_of


def _without_options(sources: ArgumentSources) -> dict[str, Any]:
    """Take the explanation options out of the request's arguments (query, form or JSON body:
    the model's own arguments are checked without them); the options given."""
    given: dict[str, Any] = {}
    for place in ("query", "form"):
        values: Mapping[str, Any] = getattr(sources, place)
        if any(key in values for key in OPTIONS):
            kept = MultiDict((k, v) for k, v in values.items() if k not in OPTIONS)
            given.update({k: values[k] for k in OPTIONS if k in values})
            setattr(sources, place, kept)
    if isinstance(sources.json, dict):
        given.update({k: sources.json[k] for k in OPTIONS if k in sources.json})
        sources.json = {k: v for k, v in sources.json.items() if k not in OPTIONS}
    return given


async def explain(request: web.Request) -> web.Response:
    """``POST /v2/models/{name}/explain``: the arguments of one prediction, or ``{"rows": [...]}``,
    with ``maxExplanations``, ``thresholdLow``, ``thresholdHigh``, ``explainClass``."""
    plane = request.app[PLANE]
    model = await plane.model(request.match_info["name"], version_number(request))
    uploads = UploadArea()
    try:
        sources = await read_sources(request, model.predict_args, uploads, request.app[SETTINGS].client_max_size)
        if _is_inference_request(sources, model.predict_args.accepted):
            return await _explain_tensors(request, model)
        options = explain_options(_without_options(sources))
        rows = await plane.explain(model, sources, options)
    finally:
        uploads.remove()
    return json_response({"model": model.name, "data": rows})


def _is_inference_request(sources: ArgumentSources, accepted: Any) -> bool:
    """The Open Inference Protocol's request (``{"inputs": [tensor, ...]}``), not predict's arguments."""
    return isinstance(sources.json, dict) and isinstance(sources.json.get("inputs"), list) and "inputs" not in accepted


async def _explain_tensors(request: web.Request, model: ServedModel) -> web.Response:
    """The protocol's explain: tensors in, tensors out; its errors as infer answers them."""
    try:
        payload, tensors = parse_request(await request.read(), None)
        answer = await request.app[PLANE].explain_tensors(model, payload, tensors)
    except ProtocolError as exc:
        return protocol_error(str(exc))
    except DeepaasError as exc:
        return protocol_error_of(exc)
    return json_response(answer)


async def start_initialization(request: web.Request) -> web.Response:
    """``POST .../explanations-initialization/``: ``{"rows": [...]}`` or a CSV ``data`` part; 202."""
    plane = request.app[PLANE]
    model = await plane.predicting(request.match_info["name"])
    options, rows = await options_and_rows(request)
    if options:
        raise ArgumentError(
            f"Unknown fields: {', '.join(sorted(options))}; accepted: rows (or a CSV 'data' part)",
            {key: ["Unknown field."] for key in options},
        )
    lenient = request.content_type == "multipart/form-data"  # a CSV file's rows
    job = await plane.start_initialization(model, rows or [], lenient=lenient, owner=request[PRINCIPAL].identity)
    document = _job_document(request, job)
    return json_response(document, status=202, headers={"Location": document["links"]["self"]})


def _job_document(request: web.Request, job: Job) -> dict[str, Any]:
    """The job's document, as model tests' are (its links under ``explanations-initialization/``)."""
    return job.task_document(request.app[JOBS].base(job.model))


async def get_initialization(request: web.Request) -> web.Response:
    """``GET .../explanations-initialization/``: the model's background rows (404 without)."""
    name = request.match_info["name"]
    plane = request.app[PLANE]
    plane.models.check_known(name)
    document = plane.initializations.get(name)
    if document is None:
        raise NotFound(f"Model '{name}' has no prediction explanations initialization", details={"model": name})
    return json_response(document)


async def delete_initialization(request: web.Request) -> web.Response:
    """``DELETE .../explanations-initialization/``: forget the model's background rows."""
    name = request.match_info["name"]
    plane = request.app[PLANE]
    plane.models.check_known(name)
    plane.initializations.delete(name)
    return web.Response(status=204)


async def get_initialization_job(request: web.Request) -> web.Response:
    """``GET .../explanations-initialization/{uuid}``: the initialization's job."""
    _, job = await job_of(request, JobKind.EXPLANATIONS)
    return json_response(_job_document(request, job))


async def cancel_initialization_job(request: web.Request) -> web.Response:
    """``DELETE .../explanations-initialization/{uuid}``: cancel the initialization's job, as
    model tests' are cancelled (409 once it has ended)."""
    jobs, job = await job_of(request, JobKind.EXPLANATIONS)
    return json_response(_job_document(request, await jobs.cancel(JobKind.EXPLANATIONS, job.model, job.id)))
