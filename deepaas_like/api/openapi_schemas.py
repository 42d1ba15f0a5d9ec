"""The schemas every part of the OpenAPI document refers to (an error, a prediction, a
model's metadata, a job), and the error responses each operation lists."""

from __future__ import annotations

from typing import Any

from apispec import APISpec

from ..jobs.model import STATUSES

ERROR = {"$ref": "#/components/schemas/Error"}


def error_responses(*codes: int) -> dict[str, Any]:
    """The responses of these error statuses, each a JSON :data:`ERROR` with what it means here."""
    text = {
        400: "Malformed body (JSON, form or multipart)",
        401: "No credential, or a malformed, expired or revoked one (WWW-Authenticate: Bearer)",
        403: "Refused on this server (the message says why and how to allow it)",
        404: "Unknown model, version or job (or an archived model)",
        409: "Not in a state that allows this: a job already finished, a failed prediction's result (its "
        "error), a model with no servable version, a plugin's name for an upload",
        413: "Request body over --client-max-size",
        415: "Unsupported Content-Type",
        422: "Invalid or unknown arguments; `errors` has the detail per argument",
        500: "The model failed; the message names the model",
        501: "The model does not implement this method",
        503: "The model is not available now (starting, restarting a worker, busy, stopping); see Retry-After",
        504: "The model did not answer within --predict-timeout",
    }
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response whose body is ``schema`` as JSON."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def components(spec: APISpec) -> None:
    """The schemas of errors, predictions, links, API versions, a model's metadata and jobs."""
    obj = {"type": "object"}
    spec.components.schema(
        "Error",
        {
            **obj,
            "required": ["message"],
            "properties": {
                "message": {"type": "string", "description": "What went wrong, for a human"},
                "errors": {"type": "object", "description": "Per-argument messages (422)"},
            },
        },
    )
    spec.components.schema(
        "Prediction",
        {
            **obj,
            "required": ["status", "predictions"],
            "properties": {
                "status": {"type": "string", "example": "OK"},
                "predictions": {"description": "What the model's predict() returned"},
            },
        },
    )
    link = {**obj, "properties": {"rel": {"type": "string"}, "href": {"type": "string"}, "type": {"type": "string"}}}
    spec.components.schema("Link", link)
    links = {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}
    spec.components.schema(
        "Version", {**obj, "properties": {"version": {"type": "string"}, "id": {"type": "string"}, "links": links}}
    )
    spec.components.schema(
        "ModelMeta",
        {
            **obj,
            "required": ["id", "name"],
            "additionalProperties": True,
            "properties": {
                k: {"type": "string"} for k in ("id", "name", "description", "author", "license", "version", "url")
            }
            | {"links": links},
        },
    )
    statuses = {"type": "string", "enum": [s.value for s in STATUSES]}
    common = {
        "uuid": {"type": "string"},
        "model": {"type": "string"},
        "date": {"type": "string", "description": "When the job was submitted"},
        "started": {"type": "string"},
        "finish_date": {"type": "string"},
        "duration": {"type": "string"},
        "status": statuses,
        "args": {"type": "object", "description": "The validated arguments (files by name)"},
        "message": {"type": "string", "description": "Why it failed, was cancelled or was interrupted"},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
        "callback": {
            **obj,
            "properties": {
                "url": {"type": "string"},
                "attempts": {"type": "integer"},
                "error": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            },
        },
    }
    spec.components.schema(
        "TrainingJob",
        {
            **obj,
            "required": ["uuid", "date", "status", "args"],
            "properties": {
                **common,
                "result": {
                    **obj,
                    "properties": {
                        "output": {"description": "What train() returned"},
                        "finish_date": {"type": "string"},
                        "duration": {"type": "string"},
                    },
                },
                "progress": {"type": "number", "minimum": 0, "maximum": 1},
                "progress_message": {"type": "string"},
                "queue_position": {"type": "integer", "description": "While queued: 1 starts next"},
            },
        },
    )
    spec.components.schema(
        "PredictionJob",
        {
            **obj,
            "required": ["id", "date", "status", "args"],
            "properties": {
                **common,
                "id": {"type": "string"},
                "result": {"description": "When done: the body a synchronous predict answers (JSON results)"},
                "result_type": {
                    "type": "string",
                    "description": "When done with a non-JSON result: its type; download it from links.result",
                },
                "error_status": {
                    "type": "integer",
                    "description": "The HTTP status a synchronous predict would have had",
                },
            },
        },
    )
