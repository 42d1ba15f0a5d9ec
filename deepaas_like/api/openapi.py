"""The OpenAPI 3 document, built once at start from every model's own declarations."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields as ma_fields

from .. import __version__
from ..arguments import ArgumentSpec, is_file_field
from ..auth.policy import Policy
from ..jobs.model import STATUSES
from ..legacy import legacy_vocabulary_allowed
from ..models import ModelSet, ServedModel
from ..settings import Settings
from . import openapi_auth, openapi_oip, openapi_quality, openapi_registry

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
            **_error_responses(400, 413, 415, 422, 500, 501, 503, 504),
        },
    }
    body = _request_body(spec)
    if body:
        operation["requestBody"] = body
    return operation


def _job_paths(model: ServedModel, kind: str) -> dict[str, dict[str, Any]]:
    """Submit, list, get, cancel (and log or result) of trainings or predictions."""
    training = kind == "training"
    schema = {"$ref": f"#/components/schemas/{'TrainingJob' if training else 'PredictionJob'}"}
    job = {"application/json": {"schema": schema}}
    slug, tag = _slug(model.name), [model.name]
    base = f"/v2/models/{model.name}/{'train' if training else 'predictions'}/"
    callback = (
        "Add `callback_url` (an http(s) URL) to have the finished job's document POSTed there, "
        "with retries; the delivery is recorded in `callback`."
    )
    submit: dict[str, Any] = {
        "tags": tag,
        "summary": f"Start a training of {model.name}" if training else f"Predict with {model.name}, asynchronously",
        "description": (
            "Queues the training (it runs in a process of its own, first in first out) and answers its "
            "document at once; follow it with GET .../train/{uuid}. "
            if training
            else "Takes the same arguments as predict, validated at once (422), and answers 202 with the job; "
            "its URL is in Location. "
        )
        + callback,
        "operationId": f"{slug}_{'train' if training else 'submit_prediction'}",
        "responses": {
            "200" if training else "202": {"description": "The job", "content": job},
            **_error_responses(400, 413, 415, 422, 501, 503),
        },
    }
    body = _request_body(model.train_args if training else model.predict_args)
    if body:
        submit["requestBody"] = body
    uuid_param = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    filters = [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in STATUSES]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    ]
    listed = {
        "description": "The jobs, oldest first (total in X-Total-Count)",
        "headers": {"X-Total-Count": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": {"type": "array", "items": schema}}},
    }
    what = "training" if training else "prediction"
    paths: dict[str, dict[str, Any]] = {
        base: {
            "post": submit,
            "get": {
                "tags": tag,
                "summary": f"List the {what}s of {model.name}",
                "parameters": filters,
                "operationId": f"{slug}_list_{what}s",
                "responses": {"200": listed, **_error_responses(422)},
            },
        },
        base + "{uuid}": {
            "parameters": [uuid_param],
            "get": {
                "tags": tag,
                "summary": f"Status of a {what} (with its result, duration or error)",
                "operationId": f"{slug}_get_{what}",
                "responses": {"200": {"description": "The job", "content": job}, **_error_responses(404)},
            },
            "delete": {
                "tags": tag,
                "summary": f"Cancel a queued or running {what} (a running training's process is stopped)",
                "operationId": f"{slug}_cancel_{what}",
                "responses": {
                    "200": {"description": "The cancelled job", "content": job},
                    **_error_responses(404, 409),
                },
            },
        },
    }
    if training:
        paths[base + "{uuid}/log"] = {
            "parameters": [uuid_param],
            "get": {
                "tags": tag,
                "summary": "The training's output so far (stdout, stderr and logging)",
                "operationId": f"{slug}_training_log",
                "parameters": [{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
                "responses": {
                    "200": {
                        "description": "Text; X-Log-Size is the log's size",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_error_responses(404, 422),
                },
            },
        }
    else:
        result_content: dict[str, Any] = {
            "application/json": {"schema": model.response_schema or {"$ref": "#/components/schemas/Prediction"}}
        }
        for choice in model.predict_args.accept_choices or []:
            if isinstance(choice, str) and choice not in ("application/json", "*/*"):
                result_content[choice] = {"schema": {"type": "string", "format": "binary"}}
        paths[base + "{uuid}/result"] = {
            "parameters": [uuid_param],
            "get": {
                "tags": tag,
                "summary": "The finished prediction's body, as a synchronous predict answers it",
                "operationId": f"{slug}_prediction_result",
                "responses": {
                    "200": {"description": "The prediction", "content": result_content},
                    **_error_responses(404, 409),
                },
            },
        }
    return paths


def _components(spec: APISpec) -> None:
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


def _static_paths(spec: APISpec) -> None:
    def get(tag: str, summary: str, schema: dict[str, Any], op_id: str, extra: dict | None = None) -> dict:
        responses = {"200": {"description": summary, "content": {"application/json": {"schema": schema}}}}
        return {
            "get": {"tags": [tag], "summary": summary, "operationId": op_id, "responses": responses | (extra or {})}
        }

    version = {"$ref": "#/components/schemas/Version"}
    meta = {"$ref": "#/components/schemas/ModelMeta"}
    spec.path(
        "/",
        operations=get(
            "versions",
            "API versions",
            {
                "type": "object",
                "properties": {
                    "versions": {"type": "array", "items": version},
                    "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
                },
            },
            "versions",
        ),
    )
    spec.path("/v2/", operations=get("versions", "The v2 API", version, "v2_version"))
    spec.path(
        "/v2/models/",
        operations=get(
            "models",
            "Every served model with its metadata",
            {"type": "object", "properties": {"models": {"type": "array", "items": meta}}},
            "list_models",
        ),
    )
    spec.path("/v2/health/live", operations=get("health", "The server is alive", {"type": "object"}, "health_live"))
    spec.path(
        "/metrics",
        operations={
            "get": {
                "tags": ["health"],
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
    spec.path(
        "/v2/health/ready",
        operations=get(
            "health",
            "Every model is warm and has a live worker",
            {"type": "object"},
            "health_ready",
            {
                "503": {
                    "description": "Some model is not ready",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        ),
    )


def _failed_note(models: ModelSet) -> str:
    """Installed plugins that could not be loaded, said where Swagger UI shows it first."""
    if not models.broken:
        return ""
    lines = "\n".join(f"* **{name}**: {error.reason}" for name, error in sorted(models.broken.items()))
    return f"\n\n**Models that could not be loaded** (their routes answer 503 with the error):\n\n{lines}"


def build_openapi(models: ModelSet, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3 document for these models and settings."""
    marshmallow_plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: None)
    spec = APISpec(
        title="deepaas_like",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[marshmallow_plugin],
        info={"description": DESCRIPTION + _failed_note(models)},
        servers=[{"url": settings.base_path or "/"}],
        tags=[{"name": name, "description": str(m.metadata.get("description") or "")} for name, m in models.items()],
    )
    marshmallow_plugin.converter.add_attribute_function(_file_property)
    _components(spec)
    _static_paths(spec)
    with legacy_vocabulary_allowed():
        for model in models.values():
            spec.path(
                f"/v2/models/{model.name}/",
                operations={
                    "get": {
                        "tags": [model.name],
                        "summary": f"Metadata of {model.name}",
                        "operationId": f"{_slug(model.name)}_metadata",
                        "responses": {
                            "200": {
                                "description": "The model's metadata",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelMeta"}}},
                            },
                            **_error_responses(404),
                        },
                    }
                },
            )
            spec.path(
                f"/v2/models/{model.name}/ready",
                operations={
                    "get": {
                        "tags": [model.name],
                        "summary": f"Readiness of {model.name}",
                        "operationId": f"{_slug(model.name)}_ready",
                        "responses": {
                            "200": {
                                "description": "Warm, with a live worker",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            },
                            "503": {
                                "description": "Not ready",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            },
                            **_error_responses(404),
                        },
                    }
                },
            )
            job_paths: dict[str, dict[str, Any]] = {}
            if settings.predict_endpoint and model.can_predict:
                spec.path(f"/v2/models/{model.name}/predict/", operations={"post": _predict_operation(model)})
                spec.path(
                    f"/v2/models/{model.name}/infer",
                    operations={"post": openapi_oip.infer_operation(model.name, _slug(model.name), _error_responses)},
                )
                job_paths.update(_job_paths(model, "prediction"))
                job_paths.update(_quality_paths(model, rows_required=True))
            if settings.train_endpoint and model.can_train:
                job_paths.update(_job_paths(model, "training"))
            for path, operations in job_paths.items():
                parameters = operations.pop("parameters", None)
                spec.path(path, operations=operations, parameters=parameters)
        openapi_registry.components(spec)
        openapi_oip.components(spec)
        openapi_quality.components(spec)
        openapi_auth.components(spec)
        openapi_registry.registry_paths(spec, _error_responses, settings.predict_endpoint)
        openapi_auth.auth_paths(spec, _error_responses)
        if models.uploads is not None:
            openapi_registry.uploaded_model_paths(
                spec,
                models.uploads,
                _error_responses,
                _predict_operation,
                _job_paths,
                settings.predict_endpoint,
                _extra_model_paths,
                public_only=settings.auth,
            )
        return spec.to_dict()


BEARER = "bearerAuth"


def declare_security(
    document: dict[str, Any], policy_of: Callable[[str, str], Policy | None], models: set[str]
) -> None:
    """The bearer scheme, and each operation's requirement from its route's policy."""
    document.setdefault("components", {})["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (deepaas-token create) or an HS256 JWT (--jwt-secret-file)",
        }
    }
    for path, item in document["paths"].items():
        parts = path.split("/")
        template = path
        if len(parts) > 3 and parts[1:3] == ["v2", "models"] and parts[3] in models:
            template = "/".join([*parts[:3], "{name}", *parts[4:]])
        for method, operation in item.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            policy = policy_of(template, method)
            if policy is None or policy.open:
                operation["security"] = []
                continue
            operation["security"] = [{BEARER: []}, {}] if policy.public else [{BEARER: []}]
            operation["x-required-scope"] = str(policy.scope) if policy.scope else None
            operation["description"] = (operation.get("description", "") + "\n\nAccess: " + policy.describe()).strip()
            operation.setdefault("responses", {}).update(_error_responses(401, 403))


def _quality_paths(model: ServedModel, rows_required: bool) -> dict[str, dict[str, Any]]:
    """Tests and feature impact of a model: each row is what its predict takes as JSON."""
    row = model.predict_args.schema_class if not model.predict_args.has_files else None
    return openapi_quality.quality_paths(model.name, _slug(model.name), _error_responses, row, rows_required)


def _extra_model_paths(model: ServedModel, has_dataset: bool) -> dict[str, dict[str, Any]]:
    """The inference protocol's and the quality jobs' paths of an uploaded model (without rows,
    its tests and feature impact use the reference dataset, if it has one)."""
    name = model.name
    return {
        f"/v2/models/{name}/infer": {"post": openapi_oip.infer_operation(name, _slug(name), _error_responses)},
        **_quality_paths(model, rows_required=not has_dataset),
    }


class OpenApiDocument:
    """The encoded document, rebuilt when the registry's models change."""

    def __init__(
        self, models: ModelSet, settings: Settings, policy_of: Callable[[str, str], Policy | None] | None = None
    ) -> None:
        self._models = models
        self._settings = settings
        self._policy_of = policy_of
        self._revision = -1
        self._encoded = b""

    def encoded(self) -> bytes:
        uploads = self._models.uploads
        revision = uploads.revision if uploads is not None else 0
        if revision != self._revision:
            document = build_openapi(self._models, self._settings)
            if self._settings.auth and self._policy_of is not None:
                names = {*self._models, *((m.name for m in uploads.models()) if uploads is not None else ())}
                declare_security(document, self._policy_of, names)
            self._encoded = json.dumps(document).encode()
            self._revision = revision
        return self._encoded
