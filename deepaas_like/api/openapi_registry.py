"""The registry's part of the OpenAPI document: its routes, and each uploaded model's own.

Each uploaded model gets concrete paths (metadata, predict with a form of its input
columns, async predictions) like a plugin, so Swagger UI shows its form; the routes
that manage the registry are documented once, with ``{name}`` and ``{version}``.
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry.intake import FILETYPES, LIBRARIES, OPTIMIZATIONS
from ..registry.rows import MAX_ROWS
from ..registry.service import Registry

Responses = Callable[..., dict[str, Any]]
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
    "description": "The model's name (a DNS label)",
}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
UPLOADED = {"$ref": "#/components/schemas/UploadedModel"}
VERSION_DOC = {"$ref": "#/components/schemas/ModelVersion"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def components(spec: Any) -> None:
    obj = {"type": "object"}
    spec.components.schema(
        "ModelVersion",
        {
            **obj,
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "sha256": {"type": "string"},
                "size": {"type": "integer"},
                "library": {"type": "string", "enum": list(LIBRARIES)},
                "filetype": {"type": "string", "enum": list(FILETYPES)},
                "filename": {"type": "string", "nullable": True},
                "library_versions": obj,
                "created_at": {"type": "string"},
                "status": {"type": "string", "enum": ["loading", "ready", "error"]},
                "error": {"type": "string", "description": "Why the file does not load"},
                "signature": obj,
                "optimization": obj,
                "links": obj,
            },
        },
    )
    spec.components.schema(
        "UploadedModel",
        {
            **obj,
            "required": ["id", "name", "source"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "source": {"type": "string", "enum": ["upload"]},
                "description": {"type": "string"},
                "is_public": {"type": "boolean"},
                "current_version": {"type": "integer", "nullable": True},
                "version_count": {"type": "integer"},
                "versions": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The versions that serve (Open Inference Protocol)",
                },
                "library": {"type": "string", "nullable": True},
                "filetype": {"type": "string", "nullable": True},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
                "last_predict_at": {"type": "string", "nullable": True},
                "archived": {"type": "boolean"},
                "archived_at": {"type": "string"},
                "signature": obj,
                "links": {"type": "array", "items": obj},
                "version": VERSION_DOC,
            },
        },
    )
    spec.components.schema(
        "VersionConfig",
        {
            **obj,
            "properties": {
                "input_schema": {
                    "type": "object",
                    "nullable": True,
                    "description": "A JSON Schema with one property per input column, in order",
                },
                "output_schema": {
                    "type": "object",
                    "nullable": True,
                    "description": "A JSON Schema each row's prediction must match",
                },
                "batching": {
                    "type": "object",
                    "nullable": True,
                    "properties": {
                        "max_batch_size": {"type": "integer", "minimum": 1},
                        "max_batch_time_ms": {"type": "number", "minimum": 0},
                        "predict_timeout": {"type": "number", "minimum": 0},
                    },
                },
            },
        },
    )
    neuro = {
        **obj,
        "properties": {
            "model_name": {"type": "string"},
            "library": {"type": "string", "nullable": True},
            "filetype": {"type": "string", "nullable": True},
            "is_public": {"type": "boolean"},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string", "nullable": True},
        },
    }
    spec.components.schema("MlModel", neuro)


def registry_paths(spec: Any, errors: Responses, predict_endpoint: bool = True) -> None:
    """The routes that upload and manage models (documented once, for every name)."""
    tag = ["registry"]
    upload_form = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The persisted model"},
            "library": {"type": "string", "enum": list(LIBRARIES), "description": "Inferred from the file if left out"},
            "filetype": {
                "type": "string",
                "enum": list(FILETYPES),
                "description": "Inferred from the file if left out",
            },
            "is_public": {"type": "boolean"},
            "description": {"type": "string"},
            "input_schema": {"type": "string", "description": "JSON Schema of the inputs (one property per column)"},
            "output_schema": {"type": "string", "description": "JSON Schema each row's prediction must match"},
            "optimize": {
                "type": "string",
                "enum": list(OPTIMIZATIONS),
                "description": "onnx: convert a scikit-learn model, serve the graph if it agrees",
            },
        },
    }
    model = {
        "200": _json(UPLOADED, "The model, and the new version (a new version of an existing model)"),
        "201": _json(UPLOADED, "The model was created with its first version"),
        **errors(400, 403, 409, 413, 415, 422),
    }
    spec.path(
        "/v2/models/{name}",
        parameters=[NAME],
        operations={
            "get": {
                "tags": tag,
                "summary": "A model's metadata (as GET /v2/models/{name}/)",
                "operationId": "get_model",
                "responses": {"200": _json({"type": "object"}, "The model's metadata"), **errors(404, 503)},
            },
            "put": {
                "tags": tag,
                "summary": "Upload a model file: a new model, or a new version of one",
                "description": "Served at once from a shared worker; a file that does not load is kept as an "
                "`error` version (422) and the current version keeps serving. Refused (403) on a "
                "non-loopback address without --enable-uploads. A pickle, joblib or TorchScript "
                "file (loading it runs code) needs the `models:write-code` scope, and is refused "
                "(403) where the workers that load it cannot be contained; skops, ONNX, Keras and "
                ".pt2 files need `models:write`. Only the model's owner sets `is_public` on an "
                "existing model.",
                "operationId": "upload_model",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": upload_form}}},
                "responses": model,
            },
            "patch": {
                "tags": tag,
                "summary": "Change the serving version (roll back or forward), is_public, description",
                "operationId": "update_model",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "current_version": {"type": "integer", "minimum": 1},
                                    "is_public": {"type": "boolean"},
                                    "description": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(UPLOADED, "The model"), **errors(400, 403, 404, 409, 415, 422)},
            },
            "delete": {
                "tags": tag,
                "summary": "Archive the model (files and history kept); ?purge=true deletes it",
                "operationId": "archive_model",
                "parameters": [{"name": "purge", "in": "query", "schema": {"type": "boolean", "default": False}}],
                "responses": {
                    "200": _json({"type": "object"}, "The archived model, or what was deleted"),
                    **errors(403, 404, 409, 422),
                },
            },
        },
    )
    spec.path(
        "/v2/models/{name}/restore",
        parameters=[NAME],
        operations={
            "post": {
                "tags": tag,
                "summary": "Bring an archived model back",
                "operationId": "restore_model",
                "responses": {"200": _json(UPLOADED, "The model"), **errors(403, 404, 409)},
            }
        },
    )
    spec.path(
        "/v2/models/{name}/versions/",
        parameters=[NAME],
        operations={
            "get": {
                "tags": tag,
                "summary": "Every version of an uploaded model",
                "operationId": "list_versions",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"versions": {"type": "array", "items": VERSION_DOC}}},
                        "The versions, oldest first",
                    ),
                    **errors(404),
                },
            }
        },
    )
    spec.path(
        "/v2/models/{name}/versions/{version}",
        parameters=[NAME, VERSION],
        operations={
            "get": {
                "tags": tag,
                "summary": "One version: sha256, size, library versions, status",
                "operationId": "get_version",
                "responses": {"200": _json(VERSION_DOC, "The version"), **errors(404, 422)},
            }
        },
    )
    csv = {"text/csv": {"schema": {"type": "string"}}}
    spec.path(
        "/v2/models/{name}/versions/{version}/dataset",
        parameters=[NAME, VERSION],
        operations={
            "get": {
                "tags": tag,
                "summary": "The version's reference dataset (CSV)",
                "operationId": "get_dataset",
                "responses": {"200": {"description": "The CSV", "content": csv}, **errors(404, 422)},
            },
            "put": {
                "tags": tag,
                "summary": "Keep a reference dataset (CSV) with the version: model tests and feature "
                "impact use it when no rows are given",
                "operationId": "put_dataset",
                "requestBody": {"required": True, "content": csv},
                "responses": {"200": _json({"type": "object"}, "What was kept"), **errors(400, 403, 404, 422)},
            },
        },
    )
    spec.path(
        "/v2/models/{name}/versions/{version}/download",
        parameters=[NAME, VERSION],
        operations={
            "get": {
                "tags": tag,
                "summary": "The exact bytes uploaded",
                "operationId": "download_version",
                "responses": {
                    "200": {
                        "description": "The file (Content-Disposition: attachment; X-Content-SHA256)",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **errors(404, 422),
                },
            }
        },
    )
    config = {"$ref": "#/components/schemas/VersionConfig"}
    spec.path(
        "/v2/models/{name}/versions/{version}/config",
        parameters=[NAME, VERSION],
        operations={
            "get": {
                "tags": tag,
                "summary": "Input schema, output schema and batching of a version",
                "operationId": "get_version_config",
                "responses": {"200": _json(config, "The config"), **errors(404, 422)},
            },
            "put": {
                "tags": tag,
                "summary": "Replace a version's config (the next predictions use it)",
                "operationId": "put_version_config",
                "requestBody": {"required": True, "content": {"application/json": {"schema": config}}},
                "responses": {"200": _json(config, "The config"), **errors(400, 403, 404, 409, 415, 422)},
            },
        },
    )
    _neurodeploy_paths(spec, errors)
    if not predict_endpoint:
        return
    body = {"type": "object", "description": 'The version\'s input columns, or {"rows": [...]} for many rows'}
    prediction = {"$ref": "#/components/schemas/Prediction"}
    spec.path(
        "/v2/models/{name}/versions/{version}/predict/",
        parameters=[NAME, VERSION],
        operations={
            "post": {
                "tags": tag,
                "summary": "Predict with a given version",
                "operationId": "predict_version",
                "requestBody": {"content": {"application/json": {"schema": body}}},
                "responses": {
                    "200": _json(prediction, "The prediction"),
                    **errors(400, 404, 409, 413, 415, 422, 500, 503, 504),
                },
            }
        },
    )
    from .openapi_oip import infer_operation

    spec.path(
        "/v2/models/{name}/versions/{version}/infer",
        parameters=[NAME, VERSION],
        operations={"post": infer_operation("registry", "registry", errors, versioned=True)},
    )
    spec.path(
        "/v2/models/{name}/versions/{version}/ready",
        parameters=[NAME, VERSION],
        operations={
            "get": {
                "tags": tag,
                "summary": "Readiness of a version (Open Inference Protocol)",
                "operationId": "version_ready",
                "responses": {
                    "200": _json({"type": "object"}, "Ready"),
                    "503": _json({"type": "object"}, "Not ready"),
                    **errors(404, 409, 422),
                },
            }
        },
    )
    spec.path(
        "/v2/models/{name}/versions/{version}/predictions/",
        parameters=[NAME, VERSION],
        operations={
            "post": {
                "tags": tag,
                "summary": "Predict with a given version, asynchronously",
                "operationId": "submit_version_prediction",
                "requestBody": {"content": {"application/json": {"schema": body}}},
                "responses": {
                    "202": _json({"$ref": "#/components/schemas/PredictionJob"}, "The job"),
                    **errors(400, 404, 409, 413, 415, 422, 503),
                },
            }
        },
    )


def _neurodeploy_paths(spec: Any, errors: Responses) -> None:
    tag = ["ml-models"]
    item = {"$ref": "#/components/schemas/MlModel"}
    spec.path(
        "/ml-models",
        operations={
            "get": {
                "tags": tag,
                "summary": "Uploaded models in Neurodeploy's shape (updated_at: the last prediction)",
                "operationId": "ml_models",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                    },
                    {"name": "deleted", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "used", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"models": {"type": "array", "items": item}}}, "The models"
                    ),
                    **errors(422),
                },
            }
        },
    )
    spec.path(
        "/ml-models/{name}",
        parameters=[NAME],
        operations={
            "get": {
                "tags": tag,
                "summary": "One uploaded model",
                "operationId": "ml_model",
                "responses": {"200": _json(item, "The model"), **errors(404)},
            },
            "put": {
                "tags": tag,
                "summary": "Upload a model file as the request body",
                "operationId": "ml_model_put",
                "parameters": [
                    {"name": "lib", "in": "query", "schema": {"type": "string", "enum": list(LIBRARIES)}},
                    {"name": "filetype", "in": "query", "schema": {"type": "string", "enum": list(FILETYPES)}},
                    {"name": "is_public", "in": "query", "schema": {"type": "boolean"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "model_name": {"type": "string"},
                                "model_type": {"type": "string"},
                                "persistence_type": {"type": "string"},
                                "uploaded_at": {"type": "string"},
                            },
                        },
                        "Uploaded",
                    ),
                    **errors(403, 409, 413, 422),
                },
            },
            "delete": {
                "tags": tag,
                "summary": "Delete (archive) a model",
                "operationId": "ml_model_delete",
                "responses": {
                    "200": _json({"type": "object", "properties": {"message": {"type": "string"}}}, "Deleted"),
                    **errors(403, 404, 409),
                },
            },
        },
    )


def uploaded_model_paths(
    spec: Any,
    registry: Registry,
    errors: Responses,
    predict_operation: Callable,
    job_paths: Callable,
    predict_endpoint: bool = True,
    extra_paths: Callable[[Any, bool], dict] | None = None,
    public_only: bool = False,
) -> None:
    """Each uploaded model's own paths, like a plugin's: its form is its input columns.

    ``public_only`` (with --auth: the document is open to all): a private model's name and
    columns are not shown; it is called through the generic ``/v2/models/{name}/...`` routes."""
    for record in registry.models():
        if public_only and not record.is_public:
            continue
        name = record.name
        spec.path(
            f"/v2/models/{name}/",
            operations={
                "get": {
                    "tags": [name],
                    "summary": f"Metadata of {name} (uploaded)",
                    "operationId": f"{_slug(name)}_metadata",
                    "responses": {"200": _json(UPLOADED, "The model"), **errors(404)},
                }
            },
        )
        served = registry.described(name) if predict_endpoint else None
        if served is None:
            continue
        operation = predict_operation(served)
        operation["description"] = (
            f"Version {record.current_version}. One row as the inputs below (a form, the "
            f'query string or JSON), or up to {MAX_ROWS} rows as JSON {{"rows": [...]}}.'
        )
        operation["responses"].update(errors(404, 409))
        content = operation.setdefault("requestBody", {"content": {}})["content"]
        single = content.get("application/json", {}).get("schema")
        width = served.rows_args.width if served.rows_args is not None else None
        as_list = {
            "type": "array",
            "description": "The values in the inputs' order",
            **({"minItems": width, "maxItems": width} if width is not None else {}),
        }
        rows = {
            "type": "object",
            "required": ["rows"],
            "additionalProperties": False,
            "properties": {
                "rows": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ROWS,
                    "items": {"anyOf": [single or {"type": "object"}, as_list]},
                }
            },
        }
        content["application/json"] = {"schema": {"oneOf": [single, rows]} if single else rows}
        operation["requestBody"]["required"] = True
        spec.path(f"/v2/models/{name}/predict/", operations={"post": operation})
        current = registry.current(name)
        has_dataset = bool(current is not None and current.config.get("dataset"))
        more = {**job_paths(served, "prediction"), **(extra_paths(served, has_dataset) if extra_paths else {})}
        for path, operations in more.items():
            parameters = operations.pop("parameters", None)
            for item in operations.values():  # archived, purged or made private since
                item["responses"].update(errors(404))
            spec.path(path, operations=operations, parameters=parameters)


def _slug(name: str) -> str:
    return name.replace("-", "_")
