"""HTTP handlers of model tests and feature impact (durable jobs), and of an uploaded
version's reference dataset."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ArgumentError, BadRequest, Conflict, DeepaasError
from ..jobs.model import Job, JobKind, JobStatus
from ..quality.checks import IGNORED, TestRun, configuration_of
from ..quality.impact import REPEATS, impact_plot
from ..quality.samples import Row, rows_from_csv
from .bodies import form_parts, read_field
from .job_handlers import job_of
from .keys import JOBS, PLANE, PRINCIPAL, SETTINGS
from .readers import options_and_rows, registry, route_version
from .responses import json_response

_NOT_GIVEN = object()


def _row_count(value: Any) -> int | None:
    if value is _NOT_GIVEN:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentError("rowCount must be a positive integer", {"rowCount": ["Must be a positive integer."]})
    return value


def _rows_of(request: web.Request, rows: list[Row] | None, options: dict[str, Any], seed: int) -> list[Row]:
    """The rows given or the model's reference dataset (see :meth:`DataPlane.sample_rows`)."""
    count = _row_count(options.get("rowCount", _NOT_GIVEN))
    return request.app[PLANE].sample_rows(request.match_info["name"], rows, count, seed)


def _known(options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ArgumentError(
            f"Unknown fields: {', '.join(unknown)}; accepted: {', '.join(sorted(allowed | {'rows'}))}",
            {key: ["Unknown field."] for key in unknown},
        )


def _accepted(request: web.Request, job: Job) -> web.Response:
    document = request.app[JOBS].document(job)
    return json_response(document, status=202, headers={"Location": document["links"]["self"]})


# --- model tests --------------------------------------------------------------------------


async def start_tests(request: web.Request) -> web.Response:
    """``POST .../tests/``: ``{rows, configuration, ignore}`` (or a CSV ``data`` part); 202."""
    plane = request.app[PLANE]
    model = await plane.predicting(request.match_info["name"])
    options, rows = await options_and_rows(request)
    _known(options, {"configuration", "ignore", "rowCount", "seed"})
    configuration = configuration_of(options.get("configuration", {}))
    ignore = options.get("ignore", list(IGNORED))
    if not isinstance(ignore, list) or not all(isinstance(k, str) for k in ignore):
        raise ArgumentError("ignore must be a list of keys", {"ignore": ["Must be a list of strings."]})
    seed = _integer(options, "seed", 0, 0, None)
    lenient = rows is None or request.content_type == "multipart/form-data"  # a CSV file's rows
    rows = _rows_of(request, rows, options, seed)
    run = TestRun(configuration, tuple(ignore))
    job = await plane.start_tests(model, rows, run, lenient=lenient, owner=request[PRINCIPAL].identity)
    return _accepted(request, job)


# --- feature impact ----------------------------------------------------------------------


async def start_impact(request: web.Request) -> web.Response:
    """``POST .../feature-impact/``: ``{rows, rowCount, seed, repeats}`` (or a CSV ``data`` part); 202."""
    plane = request.app[PLANE]
    model = await plane.predicting(request.match_info["name"])
    options, rows = await options_and_rows(request)
    _known(options, {"rowCount", "seed", "repeats"})
    seed = _integer(options, "seed", 0, 0, 1000)
    repeats = _integer(options, "repeats", REPEATS, 1, 1000)
    lenient = rows is None or request.content_type == "multipart/form-data"  # a CSV file's rows
    rows = _rows_of(request, rows, options, seed)
    job = await plane.start_impact(
        model, rows, seed=seed, repeats=repeats, lenient=lenient, owner=request[PRINCIPAL].identity
    )
    return _accepted(request, job)


def _integer(options: dict[str, Any], key: str, default: int, low: int, high: int | None) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        if high is None:
            raise ArgumentError(f"{key} must be a non-negative integer", {key: ["Not a valid integer."]})
        raise ArgumentError(f"{key} must be an integer from {low} to {high}", {key: ["Not a valid integer."]})
    return value


async def impact_plot_png(request: web.Request) -> web.Response:
    """``GET .../feature-impact/{uuid}/plot.png``: the impacts as a bar chart."""
    _, job = await job_of(request, JobKind.IMPACT)
    if job.status is not JobStatus.DONE:
        raise Conflict(
            f"Feature impact '{job.id}' has no plot: it is {job.status}", details={"uuid": job.id, "status": job.status}
        )
    import asyncio

    png = await asyncio.to_thread(
        impact_plot, job.result, f"Feature impact of {job.model} ({job.result['rowCount']} rows)"
    )
    return web.Response(body=png, content_type="image/png")


# --- logs of either ------------------------------------------------------------------------


async def _log_text(request: web.Request, kind: JobKind) -> tuple[Job, str]:
    jobs, job = await job_of(request, kind)
    return job, (await jobs.read_log(job)).decode("utf-8", errors="replace")


def log_handlers(kind: JobKind) -> tuple[Any, Any]:
    """``GET .../{uuid}/log`` (everything) and ``.../log/tail?lines=N`` (the last lines)."""

    async def whole(request: web.Request) -> web.Response:
        job, text = await _log_text(request, kind)
        return web.Response(text=text, content_type="text/plain", headers={"X-Job-Status": job.status})

    async def tail(request: web.Request) -> web.Response:
        from .readers import query_int

        lines = query_int(request, "lines", 20, 1, 10000)
        job, text = await _log_text(request, kind)
        return web.Response(
            text="".join(text.splitlines(keepends=True)[-lines:]),
            content_type="text/plain",
            headers={"X-Job-Status": job.status},
        )

    return whole, tail


test_log, test_log_tail = log_handlers(JobKind.TEST)
impact_log, impact_log_tail = log_handlers(JobKind.IMPACT)
explanations_log, _ = log_handlers(JobKind.EXPLANATIONS)


# --- an uploaded version's reference dataset ---------------------------------------------------


async def put_dataset(request: web.Request) -> web.Response:
    """``PUT .../versions/{n}/dataset``: a CSV (the body, or a multipart ``file``) kept with the version."""
    reg = registry(request)
    name, number = request.match_info["name"], route_version(request)
    if request.content_type == "multipart/form-data":
        try:
            part = await anext(form_parts(request), None)
            if part is None or part.name not in ("file", "data"):
                raise ArgumentError("Send the CSV as the 'file' part", {"file": ["Missing data for required field."]})
            data = await read_field(part, request.app[SETTINGS].client_max_size, "The CSV file")
        except DeepaasError:
            raise
        except Exception as exc:  # aiohttp raises several kinds on malformed input
            raise BadRequest(f"Malformed multipart body: {type(exc).__name__}: {exc}") from None
    else:
        data = await request.read()
    rows = rows_from_csv(data)
    version = await reg.datasets.save(name, number, data, rows)
    return json_response(version.config["dataset"])


async def get_dataset(request: web.Request) -> web.StreamResponse:
    reg = registry(request)
    path = reg.datasets.path(request.match_info["name"], route_version(request))
    return web.Response(body=path.read_bytes(), content_type="text/csv")
