"""Turning what ``predict`` returned into an HTTP response (JSON, bytes or a file)."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
from typing import Any

from aiohttp import hdrs, web

from ..errors import DeepaasError, ModelError
from ..files import ReturnedFile
from ..jsonutil import dumps_bytes
from ..models import ServedModel

JSON_TYPES = {"application/json", "*/*"}
OCTET = "application/octet-stream"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"%PDF", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
)


class ResponseSchemaMismatch(DeepaasError):
    status = 500


def json_body(model: ServedModel, value: Any) -> bytes:
    try:
        return dumps_bytes(value)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            model.name, "predict", "UnencodableResult",
            f"the result cannot be encoded as JSON ({exc})",
        ) from None


def prediction_body(model: ServedModel, result: Any) -> Any:
    """The JSON body of a prediction: validated against the model's schema if it has one."""
    if model.response_schema is None:
        return {"status": "OK", "predictions": result}
    errors = model.response_validator().validate(result) if isinstance(result, dict) else {
        "_schema": [f"Expected an object, got {type(result).__name__}."]
    }
    if errors:
        raise ResponseSchemaMismatch(
            f"Model '{model.name}' returned a prediction that does not match its declared response schema",
            details={"model": model.name, "errors": errors},
        )
    return result


async def render_prediction(
    request: web.Request, model: ServedModel, result: Any, accept: str | None
) -> web.StreamResponse:
    if isinstance(result, ReturnedFile):
        return await _send_file(request, model, result, accept)
    if isinstance(result, bytes):
        return web.Response(body=result, content_type=_content_type(accept, None, result))
    if isinstance(result, str) and accept and not _is_json(accept):
        concrete = accept if "*" not in accept else "text/plain"
        return web.Response(text=result, content_type=concrete)
    body = json_body(model, prediction_body(model, result))
    return web.Response(body=body, content_type="application/json")


def _is_json(media_type: str) -> bool:
    return media_type in JSON_TYPES or media_type.endswith("+json")


def _content_type(accept: str | None, filename: str | None, head: bytes | None) -> str:
    if accept and "*" not in accept and not _is_json(accept):
        return accept
    if filename:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed:
            return guessed
    for magic, media_type in _MAGIC:
        if head and head.startswith(magic):
            return media_type
    return OCTET


async def _send_file(
    request: web.Request, model: ServedModel, returned: ReturnedFile, accept: str | None
) -> web.StreamResponse:
    path = returned.filename
    if not path or not os.path.isfile(path):
        raise ModelError(
            model.name, "predict", "MissingFile", f"it returned a file that does not exist: {path!r}"
        )
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        head = await asyncio.to_thread(fh.read, 16)
        shown_name = returned.original_filename or os.path.basename(path)
        content_type = returned.content_type or _content_type(accept, shown_name, head)
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: content_type,
                hdrs.CONTENT_LENGTH: str(os.fstat(fh.fileno()).st_size),
                hdrs.CONTENT_DISPOSITION: f'inline; filename="{_ascii_name(shown_name)}"',
            }
        )
        await response.prepare(request)
        chunk = head
        while chunk:
            await response.write(chunk)
            chunk = await asyncio.to_thread(fh.read, 256 * 1024)
        await response.write_eof()
        return response
    finally:
        fh.close()


def _ascii_name(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._ -]', "_", name)[:200] or "file"
