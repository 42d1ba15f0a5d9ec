"""HTTP handlers of jobs: trainings (DEEPaaS's paths) and asynchronous predictions."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDict

from ..arguments import ArgumentSources, ArgumentSpec
from ..auth.policy import EDIT, UPLOAD
from ..errors import ArgumentError, BadRequest, Conflict, DeepaasError
from ..jobs.callbacks import check_callback_url
from ..jobs.manager import JobManager
from ..jobs.model import STATUSES, Job, JobKind, JobStatus
from ..models import ServedModel
from ..quality.samples import Row, checked_rows, rows_from_csv
from ..registry.retrain import plan_retraining, retrain
from .bodies import UploadArea, form_parts, read_field, read_json_object, read_sources
from .keys import GATE, JOBS, MODELS, PLANE, PRINCIPAL, SETTINGS
from .readers import ASCII_INTEGER, registry, version_number
from .rendering import send_file
from .responses import json_response

CALLBACK = "callback_url"
MAX_LIMIT = 1000


def _take_callback(sources: ArgumentSources, spec: ArgumentSpec) -> str | None:
    """``callback_url`` is the server's, unless the plugin declares an argument of that name."""
    if CALLBACK in spec.accepted:
        return None
    value = None
    for name in ("query", "form"):
        source = getattr(sources, name)
        if CALLBACK in source:
            value = source.get(CALLBACK)
            setattr(sources, name, MultiDict((k, v) for k, v in source.items() if k != CALLBACK))
    if sources.json and CALLBACK in sources.json:
        value = sources.json[CALLBACK]
        sources.json = {k: v for k, v in sources.json.items() if k != CALLBACK}
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentError("callback_url must be a string URL", {CALLBACK: ["Not a valid string."]})
    return check_callback_url(value)


async def _submit(request: web.Request, kind: JobKind) -> tuple[ServedModel, Job]:
    plane = request.app[PLANE]
    model = await plane.model(request.match_info["name"], version_number(request))
    spec = plane.job_arguments(model, kind)
    jobs = request.app[JOBS]
    job_id = jobs.new_id()
    uploads = UploadArea(directory=jobs.files.inputs_dir(job_id))
    try:
        sources = await read_sources(request, spec, uploads, request.app[SETTINGS].client_max_size)
        callback = _take_callback(sources, spec)
        owner = request[PRINCIPAL].identity
        return model, await plane.submit(kind, model, job_id, sources, uploads.path, callback, owner)
    except BaseException:
        uploads.remove()
        raise


def _listing(request: web.Request, kind: JobKind) -> web.Response:
    """Jobs of a model, oldest first; ``?status=&limit=&offset=``; total in X-Total-Count."""
    name = request.match_info["name"]
    request.app[MODELS].check_known(name)
    query = request.query
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(query) - {"status", "limit", "offset"})
    for name in unknown:
        errors[name] = ["Unknown argument."]
    status = query.get("status")
    if status is not None and status not in STATUSES:
        errors["status"] = [f"Must be one of: {', '.join(STATUSES)}."]
    limit, offset = _int(query, "limit", 100, 1, MAX_LIMIT, errors), _int(query, "offset", 0, 0, None, errors)
    if errors:
        raise ArgumentError(
            f"Invalid list arguments: {', '.join(errors)}", errors, accepted=["limit", "offset", "status"]
        )
    jobs, gate, principal = request.app[JOBS], request.app[GATE], request[PRINCIPAL]
    found = [
        job
        for job in jobs.list(kind, name, JobStatus(status) if status else None)
        if gate.sees_job(principal, job.owner, name)
    ]
    page = found[offset : offset + limit]
    return json_response([jobs.document(j) for j in page], headers={"X-Total-Count": str(len(found))})


def _int(query: Any, name: str, default: int, low: int, high: int | None, errors: dict) -> int:
    if name not in query:
        return default
    if not ASCII_INTEGER.fullmatch(query[name]):  # int() would take "٣", " 3" and "3_0"
        errors[name] = ["Not a valid integer."]
        return default
    value = int(query[name])
    if value < low or (high is not None and value > high):
        errors[name] = [f"Must be between {low} and {high}." if high else f"Must be at least {low}."]
    return value


async def job_of(request: web.Request, kind: JobKind) -> tuple[JobManager, Job]:
    """The job the route names, if the caller may see it (404 otherwise; with replicas, a job
    this one does not know yet is looked up in the store first)."""
    name = request.match_info["name"]
    request.app[MODELS].check_known(name)
    jobs, gate, principal = request.app[JOBS], request.app[GATE], request[PRINCIPAL]
    return jobs, await jobs.find(
        kind, name, request.match_info["uuid"], visible=lambda job: gate.sees_job(principal, job.owner, name)
    )


async def _show(request: web.Request, kind: JobKind) -> web.Response:
    jobs, job = await job_of(request, kind)
    return json_response(jobs.document(job))


async def _cancel(request: web.Request, kind: JobKind) -> web.Response:
    jobs, job = await job_of(request, kind)
    return json_response(jobs.document(await jobs.cancel(kind, job.model, job.id)))


# --- trainings -------------------------------------------------------------------


async def start_training(request: web.Request) -> web.Response:
    """``POST .../train/``: queue a training, answer its document (DEEPaaS answers 200). An
    uploaded scikit-learn model is retrained on the rows sent (see :func:`_retrain`)."""
    if request.app[MODELS].is_uploaded(request.match_info["name"]):
        job = await _retrain(request)
    else:
        _, job = await _submit(request, JobKind.TRAINING)
    return json_response(request.app[JOBS].document(job))


async def _retrain(request: web.Request) -> Job:
    """A clone of an uploaded version's estimator fitted on the rows sent becomes the next version
    (:mod:`deepaas_like.registry.retrain`). It adds a version as an upload does, so it needs what
    an upload needs (``models:write``, the EDITOR role) besides the route's ``models:train``; not
    ``models:write-code``: it brings no new code, the clone's is that of an accepted upload."""
    name = request.match_info["name"]
    gate, principal, reg, jobs = request.app[GATE], request[PRINCIPAL], registry(request), request.app[JOBS]
    gate.authorize(principal, EDIT, name)
    options, rows = await _training_data(request)
    callback = options.pop(CALLBACK, None)
    if callback is not None and not isinstance(callback, str):
        raise ArgumentError("callback_url must be a string URL", {CALLBACK: ["Not a valid string."]})
    plan = plan_retraining(reg, name, rows, options)
    await reg.serving.check_code_servable(name, plan.parent.library, plan.parent.filetype)
    owner = principal.identity
    job = await jobs.submit_task(
        JobKind.TRAINING,
        reg.job_model(plan.model, plan.parent),
        jobs.new_id(),
        plan.arguments(),
        lambda job, log: retrain(
            reg, plan, job, log, owner=owner, may_add_version=lambda: gate.authorize(principal, UPLOAD, name)
        ),
        owner=owner,
        as_training=True,  # in the trainings' queue, as a plugin's
        callback_url=check_callback_url(callback) if callback is not None else None,
    )
    await gate.audit(principal, "model.retrain", name, {"job": job.id, **plan.arguments()})
    return job


async def _training_data(request: web.Request) -> tuple[dict[str, Any], list[Row]]:
    """A retraining's options (``target``, ``version``: the query string, or fields of the body)
    and rows: JSON ``{"rows": [...], "target": ...}``, a CSV body (``text/csv``), or a multipart
    form with the CSV as its ``file`` (or ``data``) part. At most MAX_ROWS rows, as a reference
    dataset (422), and --client-max-size bytes (413)."""
    options: dict[str, Any] = {k: _number(v) if k == "version" else v for k, v in request.query.items()}
    data: bytes | None = None
    rows: Any = None
    limit = request.app[SETTINGS].client_max_size
    if request.content_type == "multipart/form-data":
        try:
            async for part in form_parts(request):
                if part.name in ("file", "data"):
                    data = await read_field(part, limit, "The CSV file")
                else:
                    text = (await read_field(part, 1024)).decode("utf-8", errors="replace")
                    options[part.name or ""] = _number(text) if part.name == "version" else text
        except DeepaasError:
            raise
        except Exception as exc:  # aiohttp raises several kinds on malformed input
            raise BadRequest(f"Malformed multipart body: {type(exc).__name__}: {exc}") from None
    elif request.content_type in ("text/csv", "application/csv"):
        data = await request.read()
    elif request.body_exists:
        body = await read_json_object(request)
        rows = body.pop("rows", None)
        options.update(body)
    if data is not None:
        return options, rows_from_csv(data)
    if rows is None:
        raise ArgumentError(
            'Send the training rows: JSON {"rows": [...], "target": "column"}, a CSV body (Content-Type: text/csv; '
            "?target=column), or a multipart form with the CSV as its 'file' part",
            {"rows": ["Missing data for required field."]},
        )
    return options, checked_rows(rows)


def _number(text: str) -> int | str:
    """A form's or the query's version as a number (a text that is none is refused later)."""
    return int(text) if ASCII_INTEGER.fullmatch(text) else text


async def list_trainings(request: web.Request) -> web.Response:
    return _listing(request, JobKind.TRAINING)


async def get_training(request: web.Request) -> web.Response:
    return await _show(request, JobKind.TRAINING)


async def cancel_training(request: web.Request) -> web.Response:
    return await _cancel(request, JobKind.TRAINING)


async def training_log(request: web.Request) -> web.Response:
    """The training's captured output so far; ``?offset=N`` skips the first N bytes."""
    jobs, job = await job_of(request, JobKind.TRAINING)
    errors: dict[str, list[str]] = {}
    offset = _int(request.query, "offset", 0, 0, None, errors)
    if errors:
        raise ArgumentError("Invalid offset", errors)
    data = await jobs.read_log(job, offset)
    return web.Response(
        body=data,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Log-Size": str(offset + len(data)), "X-Job-Status": job.status},
    )


# --- asynchronous predictions -------------------------------------------------------


async def submit_prediction(request: web.Request) -> web.Response:
    """``POST .../predictions/``: validated like predict; 202 with the job and its URL."""
    _, job = await _submit(request, JobKind.PREDICTION)
    document = request.app[JOBS].document(job)
    return json_response(document, status=202, headers={"Location": document["links"]["self"]})


async def list_predictions(request: web.Request) -> web.Response:
    return _listing(request, JobKind.PREDICTION)


async def get_prediction(request: web.Request) -> web.Response:
    return await _show(request, JobKind.PREDICTION)


async def cancel_prediction(request: web.Request) -> web.Response:
    return await _cancel(request, JobKind.PREDICTION)


async def prediction_result(request: web.Request) -> web.StreamResponse:
    """The body a synchronous predict would have answered, with its content type."""
    jobs, job = await job_of(request, JobKind.PREDICTION)
    if job.status is JobStatus.ERROR:
        raise Conflict(
            f"Prediction '{job.id}' failed, so it has no result: {job.message}",
            details={"uuid": job.id, "status": job.status, "error": job.message, "error_status": job.error_status},
        )
    if job.status is not JobStatus.DONE:
        raise Conflict(
            f"Prediction '{job.id}' has no result: it is {job.status}", details={"uuid": job.id, "status": job.status}
        )
    if job.result_type is None:
        return json_response(job.result)
    filename = (job.result or {}).get("filename") if isinstance(job.result, dict) else None
    path = jobs.result_path(job)
    if not path.exists() and job.node != jobs.node:
        raise Conflict(
            f"Prediction '{job.id}' answered a file ({job.result_type}), which the replica that ran it "
            f"({job.node}) wrote to {path}; this replica does not see it there (is --artifact-dir "
            f"shared by the replicas?)",
            details={"uuid": job.id, "node": job.node},
        )
    return await send_file(request, str(path), job.result_type, filename)


# --- model tests and feature impact (started by api/quality_handlers.py) -----------------------


async def list_tests(request: web.Request) -> web.Response:
    return _listing(request, JobKind.TEST)


async def get_test(request: web.Request) -> web.Response:
    return await _show(request, JobKind.TEST)


async def cancel_test(request: web.Request) -> web.Response:
    return await _cancel(request, JobKind.TEST)


async def list_impacts(request: web.Request) -> web.Response:
    return _listing(request, JobKind.IMPACT)


async def get_impact(request: web.Request) -> web.Response:
    return await _show(request, JobKind.IMPACT)


async def cancel_impact(request: web.Request) -> web.Response:
    return await _cancel(request, JobKind.IMPACT)
