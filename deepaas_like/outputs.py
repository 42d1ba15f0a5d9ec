"""What ``predict`` returned, as a response body: JSON, bytes or a file.

Shared by synchronous predictions (sent by :mod:`deepaas_like.api.rendering`) and
asynchronous prediction jobs (kept by :mod:`deepaas_like.jobs.manager`).
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from typing import Any

from .errors import DeepaasError, ModelError
from .files import ReturnedFile
from .jsonutil import dumps_bytes
from .models import ServedModel

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


@dataclass
class PredictionOutput:
    """One prediction's response: a JSON document, bytes, or a file to stream."""

    content_type: str
    json: Any = None  # the document, when content_type is JSON
    body: bytes | None = None  # encoded JSON, or binary data
    path: str | None = None  # a file the plugin returned
    filename: str | None = None

    @property
    def is_json(self) -> bool:
        return self.path is None and self.content_type == "application/json"


def prediction_body(model: ServedModel, result: Any) -> Any:
    """The JSON body of a prediction: validated against the model's schema if it has one."""
    if model.response_schema is None:
        return {"status": "OK", "predictions": result}
    errors = (
        model.response_validator().validate(result)
        if isinstance(result, dict)
        else {"_schema": [f"Expected an object, got {type(result).__name__}."]}
    )
    if errors:
        raise ResponseSchemaMismatch(
            f"Model '{model.name}' returned a prediction that does not match its declared response schema",
            details={"model": model.name, "errors": errors},
        )
    return result


def prediction_output(model: ServedModel, result: Any, accept: str | None) -> PredictionOutput:
    if isinstance(result, ReturnedFile):
        path = result.filename
        if not path or not os.path.isfile(path):
            raise ModelError(model.name, "predict", "MissingFile", f"it returned a file that does not exist: {path!r}")
        shown = result.original_filename or os.path.basename(path)
        with open(path, "rb") as fh:
            head = fh.read(16)
        return PredictionOutput(result.content_type or _content_type(accept, shown, head), path=path, filename=shown)
    if isinstance(result, bytes):
        return PredictionOutput(_content_type(accept, None, result), body=result)
    if isinstance(result, str) and accept and not _is_json(accept):
        return PredictionOutput(accept if "*" not in accept else "text/plain", body=result.encode())
    document = prediction_body(model, result)
    try:
        encoded = dumps_bytes(document)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            model.name, "predict", "UnencodableResult", f"the result cannot be encoded as JSON ({exc})"
        ) from None
    return PredictionOutput("application/json", json=document, body=encoded)


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
