"""Reading a request's arguments: query string plus a JSON, form or multipart body.

Uploaded files are streamed to a temporary directory that belongs to the request
(:class:`UploadArea`) and never held in memory; the caller removes the directory
when the request is answered (or, for a training, when the training ends).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from multidict import MultiDict

from ..arguments import ArgumentSources, ArgumentSpec
from ..errors import ArgumentError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from ..files import UploadedFile
from ..jsonutil import loads
from .negotiation import negotiated_accept

CHUNK = 256 * 1024
MAX_FIELDS = 20000  # form fields or multipart parts in one request (aiohttp's default is 1000)
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
    sources = ArgumentSources(query=request.query,
                              negotiated_accept=negotiated_accept(spec, request.headers.get(hdrs.ACCEPT)))
    if not request.body_exists:
        return sources
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit)
    declared = hdrs.CONTENT_TYPE in request.headers
    ctype = request.content_type
    if ctype == "multipart/form-data":
        sources.form, sources.files = await _read_multipart(request, uploads, limit)
    elif ctype == "application/x-www-form-urlencoded":
        try:
            sources.form = await request.post()
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"Malformed form body: {exc}") from None
    elif ctype == "application/json" or ctype.endswith("+json") or not declared:
        raw = await request.read()
        if raw.strip():
            sources.json = _parse_json(raw, declared)
    else:
        raw = await request.read()
        if raw.strip():
            raise UnsupportedMediaType(
                f"Unsupported Content-Type '{ctype}'. Send arguments in the query string or as "
                f"{ACCEPTED_TYPES}",
                details={"accepted": ACCEPTED_TYPES.split(", ")},
            )
    return sources


def _parse_json(raw: bytes, declared: bool) -> dict:
    try:
        value = loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one
        if not declared:
            raise UnsupportedMediaType(
                "The request has a body but no Content-Type, and it is not JSON. Send arguments in "
                f"the query string or as {ACCEPTED_TYPES}",
                details={"accepted": ACCEPTED_TYPES.split(", ")},
            ) from None
        raise BadRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise ArgumentError(
            f"The JSON body must be an object of arguments, not {type(value).__name__}",
            {"_body": ["Must be a JSON object."]},
        )
    return value


async def _read_multipart(
    request: web.Request, uploads: UploadArea, limit: int
) -> tuple[MultiDict, MultiDict]:
    form: MultiDict = MultiDict()
    files: MultiDict = MultiDict()
    total = parts = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > MAX_FIELDS:
                raise PayloadTooLarge(limit, f"Too many multipart parts: the limit is {MAX_FIELDS}")
            if isinstance(part, MultipartReader):
                raise BadRequest("Nested multipart bodies are not supported")
            if not part.name:
                raise BadRequest("A multipart part has no name (Content-Disposition: form-data; name=...)")
            if part.filename is not None:
                uploaded, size = await _save_file(part, uploads, limit, total)
                total += size
                if uploaded is not None:
                    files.add(part.name, uploaded)
            else:
                data = bytearray()
                while chunk := await part.read_chunk(CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge(limit)
                    data.extend(chunk)
                charset = part.get_charset(default="utf-8")
                try:
                    form.add(part.name, data.decode(charset))
                except (UnicodeDecodeError, LookupError) as exc:
                    raise BadRequest(f"Multipart field '{part.name}' is not valid {charset} text: {exc}") from None
    except (BadRequest, PayloadTooLarge):
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
    """The request's body as a JSON object (400 if it is not JSON, 422 if not an object)."""
    try:
        body = await request.json()
    except (ValueError, LookupError) as exc:  # LookupError: an unknown charset in the Content-Type
        raise BadRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ArgumentError("The body must be a JSON object", {"_body": ["Must be a JSON object."]})
    return body
