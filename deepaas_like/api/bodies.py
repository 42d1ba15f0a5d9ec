"""Reading a request's arguments: query string plus a JSON, form or multipart body.

Uploaded files are streamed to a temporary directory that belongs to the request
(:class:`UploadArea`) and never held in memory; the caller removes the directory
when the request is answered (or, for a training, when the training ends).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import AsyncIterator, cast

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from multidict import MultiDict, MultiDictProxy

from ..arguments import ArgumentSources, ArgumentSpec
from ..errors import ArgumentError, BadRequest, DeepaasError, PayloadTooLarge, UnsupportedMediaType
from ..files import UploadedFile
from ..jsonutil import loads
from .keys import SETTINGS
from .negotiation import negotiated_accept

CHUNK = 256 * 1024
YIELD_EVERY = 8  # multipart parts read before the event loop gets a turn (health and others wait)
ACCEPTED_TYPES = "application/json, application/x-www-form-urlencoded, multipart/form-data"


class UploadArea:
    """The directory holding one request's uploaded files; created on first use."""

    def __init__(self, *, directory: Path | None = None) -> None:
        self._fixed = directory  # else a new directory in the system's temporary directory
        self.path: Path | None = None

    def new_file(self, original_name: str) -> tuple[int, str]:
        if self.path is None:
            if self._fixed is not None:
                self._fixed.mkdir(parents=True, exist_ok=True)
                self.path = self._fixed
            else:
                self.path = Path(tempfile.mkdtemp(prefix="deepaas-like-upload-"))
        suffix = os.path.splitext(os.path.basename(original_name))[1]
        suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,12}", suffix or "") else ""
        return tempfile.mkstemp(dir=self.path, suffix=suffix)

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


async def read_sources(request: web.Request, spec: ArgumentSpec, uploads: UploadArea, limit: int) -> ArgumentSources:
    """Collect the request's arguments for ``spec`` from every place they may be sent."""
    sources = ArgumentSources(
        query=request.query, negotiated_accept=negotiated_accept(spec, request.headers.get(hdrs.ACCEPT))
    )
    if not request.body_exists:
        return sources
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit)
    declared = hdrs.CONTENT_TYPE in request.headers
    ctype = request.content_type
    if ctype == "multipart/form-data":
        sources.form, sources.files = await _read_multipart(request, uploads, limit, spec.declared_parts)
    elif ctype == "application/x-www-form-urlencoded":
        try:
            # a urlencoded form's values are all text (files come only in multipart bodies)
            sources.form = cast("MultiDictProxy[str]", await request.post())
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"Malformed form body: {exc}") from None
    elif is_json(ctype):
        raw = await request.read()
        if raw.strip():
            sources.json = _parse_json(raw)
    else:
        raw = await request.read()
        if raw.strip():
            raise UnsupportedMediaType(
                (f"Unsupported Content-Type '{ctype}'" if declared else "The request has a body but no Content-Type")
                + f". Send arguments in the query string or as {ACCEPTED_TYPES} (a JSON body needs "
                "Content-Type: application/json)",
                details={"accepted": ACCEPTED_TYPES.split(", ")},
            )
    return sources


def is_json(content_type: str) -> bool:
    """Whether a body of this type is read as JSON (never a text/plain one: a cross-site
    form can send that)."""
    return content_type == "application/json" or content_type.endswith("+json")


def _parse_json(raw: bytes) -> dict:
    try:
        value = loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise BadRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise ArgumentError(
            f"The JSON body must be an object of arguments, not {type(value).__name__}",
            {"_body": ["Must be a JSON object."]},
        )
    return value


async def form_parts(request: web.Request, declared: int = 0) -> AsyncIterator[BodyPartReader]:
    """The named parts of a multipart body, one after another, at most --max-form-parts of them
    (or, if more, twice ``declared``, the most the route's arguments take: a list a little
    over its bound is read, and refused by its validation with a 422 that names it; 413
    beyond). Parts that arrived together are read without a pause otherwise: the event
    loop gets a turn every few parts, so that other requests (health) never wait long."""
    limit = max(request.app[SETTINGS].max_form_parts, 2 * declared)
    reader = await request.multipart()
    count = 0
    while (part := await reader.next()) is not None:
        count += 1
        if count > limit:
            raise PayloadTooLarge(
                limit, f"Too many multipart parts: the limit is {limit} (--max-form-parts); send many values as JSON"
            )
        if count % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if isinstance(part, MultipartReader):
            raise BadRequest("Nested multipart bodies are not supported")
        if not part.name:
            raise BadRequest("A multipart part has no name (Content-Disposition: form-data; name=...)")
        yield part


async def read_field(part: BodyPartReader, limit: int, what: str = "") -> bytes:
    """A part's bytes, reading no more than ``limit`` of them (413 beyond)."""
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(limit, f"{what or f'Multipart field {part.name!r}'} is over {limit} bytes")
    return bytes(data)


async def _read_multipart(
    request: web.Request, uploads: UploadArea, limit: int, declared: int
) -> tuple[MultiDict[str], MultiDict[UploadedFile]]:
    form: MultiDict[str] = MultiDict()
    files: MultiDict[UploadedFile] = MultiDict()
    total = 0
    try:
        async for part in form_parts(request, declared):
            assert part.name is not None  # form_parts refuses a part without one
            if part.filename is not None:
                uploaded, size = await _save_file(part, uploads, limit, total)
                total += size
                if uploaded is not None:
                    files.add(part.name, uploaded)
            else:
                data = await read_field(part, limit - total, "The request body")
                total += len(data)
                charset = part.get_charset(default="utf-8")
                try:
                    form.add(part.name, data.decode(charset))
                except (UnicodeDecodeError, LookupError) as exc:
                    raise BadRequest(f"Multipart field '{part.name}' is not valid {charset} text: {exc}") from None
    except DeepaasError:
        raise
    except Exception as exc:  # aiohttp raises several kinds on malformed input
        raise BadRequest(f"Malformed multipart body: {type(exc).__name__}: {exc}") from None
    return form, files


async def _save_file(
    part: BodyPartReader, uploads: UploadArea, limit: int, already: int
) -> tuple[UploadedFile | None, int]:
    """Stream one file part to disk. An empty, unnamed file (a blank form input) is skipped."""
    fd, path = uploads.new_file(part.filename or "")
    size = 0
    with os.fdopen(fd, "wb") as fh:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if already + size > limit:
                raise PayloadTooLarge(limit)
            fh.write(chunk)
    if size == 0 and not part.filename:
        os.unlink(path)
        return None, 0
    content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
    return UploadedFile(name=part.name, filename=path, content_type=content_type, original_filename=part.filename), size


async def read_json_object(request: web.Request) -> dict:
    """The request's body as a JSON object (415 without a JSON content type, 400 if it is not
    JSON, 422 if not an object)."""
    if request.body_exists and not is_json(request.content_type):
        raise UnsupportedMediaType(
            f"Send the body as JSON, with Content-Type: application/json (not {request.content_type!r})",
            details={"accepted": ["application/json"]},
        )
    try:
        body = await request.json()
    except (ValueError, LookupError) as exc:  # LookupError: an unknown charset in the Content-Type
        raise BadRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ArgumentError("The body must be a JSON object", {"_body": ["Must be a JSON object."]})
    return body
