"""The OpenAPI 3 document, built once at start from every model's own declarations."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields as ma_fields

from .. import __version__
from ..arguments import ArgumentSpec, is_file_field, legacy_vocabulary_allowed
from ..models import ModelRegistry, ServedModel
from ..settings import Settings

OPENAPI_VERSION = "3.0.3"
ERROR = {"$ref": "#/components/schemas/Error"}
DESCRIPTION = (
    "A REST API in front of machine-learning models, served by deepaas_like. Every model "
    "has its own predict and train routes whose arguments are documented below. "
    "Arguments may be sent as multipart/form-data (required for files), an urlencoded "
    "form, a JSON object, or in the query string; unknown arguments are refused with 422. "
    "Every error is a JSON object with a `message`."
)


def _file_property(self: Any, field: ma_fields.Field, **kwargs: Any) -> dict[str, Any]:
    """Files (``type="file"`` in DEEPaaS plugins) are binary strings in OpenAPI 3."""
    if is_file_field(field):
        return {"type": "string", "format": "binary"}
    return {}


def _error_responses(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed body (JSON, form or multipart)",
        404: "Unknown model or job",
        409: "The job is not in a state that allows this",
        413: "Request body over --client-max-size",
        415: "Unsupported Content-Type",
        422: "Invalid or unknown arguments; `errors` has the detail per argument",
        500: "The model failed; the message names the model",
        501: "The model does not implement this method",
        503: "The model is not available now (starting, restarting a worker, stopping)",
    }
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _request_body(spec: ArgumentSpec) -> dict[str, Any] | None:
    if not spec.body_fields:
        return None
    # Arrays as repeated form fields (values=1&values=2), which is what we parse.
    explode = {
        (f.data_key or name): {"style": "form", "explode": True}
        for name, f in spec.body_fields.items()
        if isinstance(f, (ma_fields.List, ma_fields.Tuple))
    }
    form: dict[str, Any] = {"schema": spec.schema_class, **({"encoding": explode} if explode else {})}
    content: dict[str, Any] = {"multipart/form-data": form}
    if not spec.has_files:
        content["application/x-www-form-urlencoded"] = dict(form)
        content["application/json"] = {"schema": spec.schema_class}
    required = any(f.required for f in spec.body_fields.values())
    return {"required": required, "content": content}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _predict_operation(model: ServedModel) -> dict[str, Any]:
    spec = model.predict_args
    json_schema: Any = model.response_schema or {"$ref": "#/components/schemas/Prediction"}
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    for choice in spec.accept_choices or []:
        if isinstance(choice, str) and choice not in ("application/json", "*/*"):
            content[choice] = {"schema": {"type": "string", "format": "binary"}}
    description = str(model.metadata.get("description") or "")
    if spec.accept is not None:
        description += (
            "\n\nThe response format is chosen by the `Accept` header (the response content "
            "type in Swagger UI) or an explicit `accept` argument"
            + (f": one of {', '.join(map(str, spec.accept_choices))}." if spec.accept_choices else ".")
        )
    operation: dict[str, Any] = {
        "tags": [model.name],
        "summary": f"Predict with {model.name}",
        "description": description.strip(),
        "operationId": f"{_slug(model.name)}_predict",
        "responses": {
            "200": {"description": "The prediction", "content": content},
            **_error_responses(400, 413, 415, 422, 500, 501, 503),
        },
    }
    body = _request_body(spec)
    if body:
        operation["requestBody"] = body
    return operation


def _training_paths(model: ServedModel) -> dict[str, dict[str, Any]]:
    job = {"application/json": {"schema": {"$ref": "#/components/schemas/TrainingJob"}}}
    start: dict[str, Any] = {
        "tags": [model.name],
        "summary": f"Start a training of {model.name}",
        "description": "Starts the training in a process of its own and answers at once with "
        "its document; poll it with GET .../train/{uuid}.",
        "operationId": f"{_slug(model.name)}_train",
        "responses": {
            "200": {"description": "The training was started", "content": job},
            **_error_responses(400, 413, 415, 422, 501, 503),
        },
    }
    body = _request_body(model.train_args)
    if body:
        start["requestBody"] = body
    uuid_param = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    base = f"/v2/models/{model.name}/train/"
    return {
        base: {
            "post": start,
            "get": {
                "tags": [model.name],
                "summary": f"List the trainings of {model.name}",
                "operationId": f"{_slug(model.name)}_list_trainings",
                "responses": {
                    "200": {
                        "description": "Every training, oldest first",
                        "content": {"application/json": {"schema": {
                            "type": "array", "items": {"$ref": "#/components/schemas/TrainingJob"}}}},
                    }
                },
            },
        },
        base + "{uuid}": {
            "parameters": [uuid_param],
            "get": {
                "tags": [model.name],
                "summary": "Status of a training (with its result, duration or error)",
                "operationId": f"{_slug(model.name)}_get_training",
                "responses": {"200": {"description": "The training", "content": job}, **_error_responses(404)},
            },
            "delete": {
                "tags": [model.name],
                "summary": "Cancel a running training (its process is stopped)",
                "operationId": f"{_slug(model.name)}_cancel_training",
                "responses": {
                    "200": {"description": "The cancelled training", "content": job},
                    **_error_responses(404, 409),
                },
            },
        },
    }


def _components(spec: APISpec) -> None:
    obj = {"type": "object"}
    spec.components.schema("Error", {
        **obj, "required": ["message"],
        "properties": {
            "message": {"type": "string", "description": "What went wrong, for a human"},
            "errors": {"type": "object", "description": "Per-argument messages (422)"},
        },
    })
    spec.components.schema("Prediction", {
        **obj, "required": ["status", "predictions"],
        "properties": {
            "status": {"type": "string", "example": "OK"},
            "predictions": {"description": "What the model's predict() returned"},
        },
    })
    link = {**obj, "properties": {"rel": {"type": "string"}, "href": {"type": "string"}, "type": {"type": "string"}}}
    spec.components.schema("Link", link)
    links = {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}
    spec.components.schema("Version", {**obj, "properties": {
        "version": {"type": "string"}, "id": {"type": "string"}, "links": links}})
    spec.components.schema("ModelMeta", {
        **obj, "required": ["id", "name"], "additionalProperties": True,
        "properties": {k: {"type": "string"} for k in ("id", "name", "description", "author", "license", "version", "url")}
        | {"links": links},
    })
    spec.components.schema("TrainingJob", {
        **obj, "required": ["uuid", "date", "status", "args"],
        "properties": {
            "uuid": {"type": "string"},
            "model": {"type": "string"},
            "date": {"type": "string", "description": "When the training was submitted"},
            "status": {"type": "string", "enum": ["running", "done", "error", "cancelled"]},
            "args": {"type": "object", "description": "The validated arguments (files by name)"},
            "result": {**obj, "properties": {
                "output": {"description": "What train() returned"},
                "finish_date": {"type": "string"},
                "duration": {"type": "string"},
            }},
            "message": {"type": "string", "description": "Why it failed or was cancelled"},
        },
    })


def _static_paths(spec: APISpec) -> None:
    def get(tag: str, summary: str, schema: dict[str, Any], op_id: str, extra: dict | None = None) -> dict:
        responses = {"200": {"description": summary, "content": {"application/json": {"schema": schema}}}}
        return {"get": {"tags": [tag], "summary": summary, "operationId": op_id, "responses": responses | (extra or {})}}

    version = {"$ref": "#/components/schemas/Version"}
    meta = {"$ref": "#/components/schemas/ModelMeta"}
    spec.path("/", operations=get("versions", "API versions", {"type": "object", "properties": {
        "versions": {"type": "array", "items": version},
        "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}}}, "versions"))
    spec.path("/v2/", operations=get("versions", "The v2 API", version, "v2_version"))
    spec.path("/v2/models/", operations=get("models", "Every served model with its metadata", {
        "type": "object", "properties": {"models": {"type": "array", "items": meta}}}, "list_models"))
    spec.path("/v2/health/live", operations=get("health", "The server is alive", {"type": "object"}, "health_live"))
    spec.path("/v2/health/ready", operations=get(
        "health", "Every model is warm and has a live worker", {"type": "object"}, "health_ready",
        {"503": {"description": "Some model is not ready", "content": {"application/json": {"schema": {"type": "object"}}}}}))


def build_openapi(models: ModelRegistry, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3 document for these models and settings."""
    marshmallow_plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: None)
    spec = APISpec(
        title="deepaas_like",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[marshmallow_plugin],
        info={"description": DESCRIPTION},
        servers=[{"url": settings.base_path or "/"}],
        tags=[{"name": name, "description": str(m.metadata.get("description") or "")} for name, m in models.items()],
    )
    marshmallow_plugin.converter.add_attribute_function(_file_property)
    _components(spec)
    _static_paths(spec)
    with legacy_vocabulary_allowed():
        for model in models.values():
            spec.path(f"/v2/models/{model.name}/", operations={"get": {
                "tags": [model.name], "summary": f"Metadata of {model.name}",
                "operationId": f"{_slug(model.name)}_metadata",
                "responses": {"200": {"description": "The model's metadata", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ModelMeta"}}}},
                    **_error_responses(404)},
            }})
            if settings.predict_endpoint and model.can_predict:
                spec.path(f"/v2/models/{model.name}/predict/", operations={"post": _predict_operation(model)})
            if settings.train_endpoint and model.can_train:
                for path, operations in _training_paths(model).items():
                    parameters = operations.pop("parameters", None)
                    spec.path(path, operations=operations, parameters=parameters)
        return spec.to_dict()
