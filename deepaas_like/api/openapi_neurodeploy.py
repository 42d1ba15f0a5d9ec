"""The Neurodeploy-shaped routes of the registry in the OpenAPI document (``/ml-models``:
uploaded models listed, uploaded as a request body, deleted)."""

from __future__ import annotations

from apispec import APISpec

from ..registry.intake import FILETYPES, LIBRARIES
from .openapi_registry import NAME, Responses
from .openapi_schemas import json_response


def components(spec: APISpec) -> None:
    """An uploaded model as Neurodeploy lists it."""
    neuro = {
        "type": "object",
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


def neurodeploy_paths(spec: APISpec, errors: Responses) -> None:
    """``/ml-models`` and ``/ml-models/{name}``."""
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
                    "200": json_response(
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
                "responses": {"200": json_response(item, "The model"), **errors(404)},
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
                    "200": json_response(
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
                    "200": json_response({"type": "object", "properties": {"message": {"type": "string"}}}, "Deleted"),
                    **errors(403, 404, 409),
                },
            },
        },
    )
