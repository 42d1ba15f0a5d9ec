"""What handlers read from a request besides its arguments: the registry, the base path, a
route's version number, query parameters, a quality job's options and rows."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ..errors import ArgumentError, BadRequest, DeepaasError
from ..quality.samples import checked_rows, rows_from_csv
from ..registry.service import Registry
from ..settings import parse_bool
from .bodies import form_parts, read_field, read_json_object
from .keys import MODELS, SETTINGS

ASCII_INTEGER = re.compile(r"-?[0-9]{1,30}")
VERSION = re.compile(r"[0-9]{1,30}")  # long enough for any id a client may try, short enough to parse


def registry(request: web.Request) -> Registry:
    return request.app[MODELS].uploads


def base(request: web.Request) -> str:
    return request.app[SETTINGS].base_path


def version_number(request: web.Request) -> int | None:
    """The ``{version}`` of a versioned route, as a number (None on other routes)."""
    text = request.match_info.get("version")
    if text is None:
        return None
    if not VERSION.fullmatch(text) or int(text) < 1:  # "٣" is a digit to str.isdigit()
        raise ArgumentError(f"Version must be a positive integer, got {text!r}", {"version": ["Not a valid version."]})
    return int(text)


def route_version(request: web.Request) -> int:
    """The ``{version}`` of a route whose path always names one (``.../versions/{version}...``)."""
    number = version_number(request)
    if number is None:
        raise RuntimeError(f"the route of {request.path} names no version")
    return number


def query_bool(request: web.Request, name: str) -> bool:
    text = request.query.get(name)
    if text is None or text == "":
        return False
    try:
        return parse_bool(text)
    except ValueError:
        raise ArgumentError(f"{name} must be true or false, got {text!r}", {name: ["Not a valid boolean."]}) from None


def query_int(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not ASCII_INTEGER.fullmatch(text):  # int() would take "٣", " 3" and "3_0"
        raise ArgumentError(f"{name} must be an integer", {name: ["Not a valid integer."]})
    value = int(text)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ArgumentError(f"{name} must be {bounds}", {name: [f"Must be {bounds}."]})
    return value


FIELD_LIMIT = 1024 * 1024  # a multipart field other than the CSV


async def options_and_rows(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """A quality job's body (model tests, feature impact, an explanations initialization): the
    options (JSON, or the fields of a multipart form) and the rows (JSON ``rows`` or a CSV ``data``)."""
    if request.content_type == "multipart/form-data":
        try:
            return await _multipart_body(request)
        except DeepaasError:
            raise
        except Exception as exc:  # aiohttp raises several kinds on malformed input
            raise BadRequest(f"Malformed multipart body: {type(exc).__name__}: {exc}") from None
    if not request.body_exists:
        return {}, None
    body = await read_json_object(request)
    rows = checked_rows(body.pop("rows")) if "rows" in body else None
    return body, rows


async def _multipart_body(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    options: dict[str, Any] = {}
    rows = None
    async for part in form_parts(request):
        if part.name == "data":
            rows = rows_from_csv(await read_field(part, request.app[SETTINGS].client_max_size, "The CSV file"))
        else:
            text = (await read_field(part, FIELD_LIMIT)).decode("utf-8", errors="replace")
            options[part.name or ""] = _json_or_text(text)  # a part without a name: an unknown field
    return options, rows


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
