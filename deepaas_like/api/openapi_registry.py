"""The registry's part of the OpenAPI document: the routes that upload and manage models
and predict with a given version, documented once with ``{name}`` and ``{version}``, and
their schemas. (Each uploaded model's own paths are in :mod:`.openapi_models`; the
Neurodeploy-shaped routes in :mod:`.openapi_neurodeploy`.)
"""

from __future__ import annotations

from typing import Any, Callable

from apispec import APISpec

from ..registry.intake import FILETYPES, LIBRARIES, OPTIMIZATIONS
from ..registry.records import VersionStatus
from . import openapi_builds
from .openapi_oip import infer_operation
from .openapi_schemas import json_response

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


def components(spec: APISpec) -> None:
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
                "status": {"type": "string", "enum": list(VersionStatus)},
                "error": {"type": "string", "description": "Why the file does not load"},
                "signature": obj,
                "optimization": obj,
                "requirements": openapi_builds.REQUIREMENTS,
                "environment": {
                    "type": "string",
                    "nullable": True,
                    "description": "The key of its own environment (a version uploaded with requirements)",
                },
                "links": obj,
                "current": {"type": "boolean", "description": "A plugin's: whether its workers serve this version"},
                "recorded": {
                    "type": "boolean",
                    "description": "A plugin's: false for version 1 before its first training (its storage_dir "
                    "as installed, recorded when that training starts)",
                },
                "source": {
                    "type": "object",
                    "description": "A plugin's: what made the version. `kind` installed (the storage_dir before "
                    "the first training) or training, with `training` (the job's id), `arguments`, `result`, "
                    "`started`, `finished` and `log` (the training's log)",
                    "properties": {
                        "kind": {"type": "string", "enum": ["installed", "training"]},
                        "training": {"type": "string"},
                        "arguments": obj,
                        "result": {},
                        "started": {"type": "string", "nullable": True},
                        "finished": {"type": "string", "nullable": True},
                        "log": {"type": "string"},
                        "description": {"type": "string"},
                    },
                },
                "file_count": {"type": "integer", "description": "A plugin's: the files of its storage_dir"},
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
                "requirements": {
                    **openapi_builds.REQUIREMENTS,
                    "nullable": True,
                    "description": "Those its environment was built with (fixed: a new version for others)",
                },
            },
        },
    )
    openapi_builds.components(spec)


def registry_paths(spec: APISpec, errors: Responses) -> None:
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
            "requirements": {
                "type": "string",
                "format": "binary",
                "description": "A requirements.txt (name==version a line; no options or local paths): the "
                "version runs in an environment of its own, built with them (202; see dependencyBuild)",
            },
        },
    }
    model = {
        "200": json_response(UPLOADED, "The model, and the new version (a new version of an existing model)"),
        "201": json_response(UPLOADED, "The model was created with its first version"),
        "202": json_response(
            UPLOADED,
            "The version's environment is building (an upload with requirements): poll Location, its "
            "dependencyBuild; the current version serves meanwhile",
        ),
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
                "responses": {"200": json_response({"type": "object"}, "The model's metadata"), **errors(404, 503)},
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
                "existing model. With `requirements` (they need `models:write-code`), the version is "
                "`building` (202) while an environment of its own is built with them; it is then loaded "
                "there and becomes `ready` or `error`.",
                "operationId": "upload_model",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": upload_form}}},
                "responses": model,
            },
            "patch": {
                "tags": tag,
                "summary": "Change the serving version (roll back or forward), is_public, description",
                "description": "An uploaded model: the version becomes current at once. A plugin takes "
                "`current_version` only: one of the versions its trainings left (GET .../versions/) is put "
                "back in its storage_dir and its workers re-warm from it, the old ones serving until then; "
                "the answer comes once they serve it (404: no such version; 409: a training of it runs; "
                "422: its workers do not warm from it, the previous version serves on).",
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
                "responses": {
                    "200": json_response(
                        {"anyOf": [UPLOADED, {"$ref": "#/components/schemas/ModelMeta"}]},
                        "The model (a plugin's document for a plugin)",
                    ),
                    **errors(400, 403, 404, 409, 415, 422, 503),
                },
            },
            "delete": {
                "tags": tag,
                "summary": "Archive the model (files and history kept); ?purge=true deletes it",
                "operationId": "archive_model",
                "parameters": [{"name": "purge", "in": "query", "schema": {"type": "boolean", "default": False}}],
                "responses": {
                    "200": json_response({"type": "object"}, "The archived model, or what was deleted"),
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
                "responses": {"200": json_response(UPLOADED, "The model"), **errors(403, 404, 409)},
            }
        },
    )
    spec.path(
        "/v2/models/{name}/versions/",
        parameters=[NAME],
        operations={
            "get": {
                "tags": tag,
                "summary": "Every version of a model: an upload's files, or what a plugin's trainings left",
                "description": "A plugin's version is a snapshot of its storage_dir: version 1 what it held "
                "before the first training, then one per training that ended done (--keep-training-versions "
                "of them kept).",
                "operationId": "list_versions",
                "responses": {
                    "200": json_response(
                        {
                            "type": "object",
                            "properties": {
                                "versions": {"type": "array", "items": VERSION_DOC},
                                "current_version": {"type": "integer", "description": "A plugin's"},
                            },
                        },
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
                "responses": {"200": json_response(VERSION_DOC, "The version"), **errors(404, 422)},
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
                "responses": {"200": json_response({"type": "object"}, "What was kept"), **errors(400, 403, 404, 422)},
            },
        },
    )
    spec.path(
        "/v2/models/{name}/versions/{version}/download",
        parameters=[NAME, VERSION],
        operations={
            "get": {
                "tags": tag,
                "summary": "The exact bytes uploaded (a plugin's version: its storage_dir as a tar)",
                "operationId": "download_version",
                "responses": {
                    "200": {
                        "description": "The file (Content-Disposition: attachment; X-Content-SHA256), or a "
                        "plugin's version as an uncompressed tar",
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                        },
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
                "responses": {"200": json_response(config, "The config"), **errors(404, 422)},
            },
            "put": {
                "tags": tag,
                "summary": "Replace a version's config (the next predictions use it)",
                "operationId": "put_version_config",
                "requestBody": {"required": True, "content": {"application/json": {"schema": config}}},
                "responses": {"200": json_response(config, "The config"), **errors(400, 403, 404, 409, 415, 422)},
            },
        },
    )
    openapi_builds.build_paths(spec, [NAME, VERSION], errors)


def version_paths(spec: APISpec, errors: Responses) -> None:
    """Predicting with a given version of an uploaded model (with --predict-endpoint)."""
    tag = ["registry"]
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
                    "200": json_response(prediction, "The prediction"),
                    **errors(400, 404, 409, 413, 415, 422, 500, 503, 504),
                },
            }
        },
    )
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
                    "200": json_response({"type": "object"}, "Ready"),
                    "503": json_response({"type": "object"}, "Not ready"),
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
                    "202": json_response({"$ref": "#/components/schemas/PredictionJob"}, "The job"),
                    **errors(400, 404, 409, 413, 415, 422, 503),
                },
            }
        },
    )
