"""The Open Inference Protocol's part of the OpenAPI document."""

from __future__ import annotations

from typing import Any, Callable

from ..oip import DATATYPES

Responses = Callable[..., dict[str, Any]]
TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {
            "description": "The values, flat or nested, row-major (BYTES as strings); left out when they follow "
            "the JSON as binary data (parameters.binary_data_size)",
            "anyOf": [{"type": "array"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}],
        },
    },
}
PROTOCOL_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def components(spec: Any) -> None:
    spec.components.schema(
        "InferenceRequest",
        {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "description": "Passed through; those that name an argument of the model apply to every row",
                },
                "inputs": {"type": "array", "minItems": 1, "items": TENSOR},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            },
        },
    )
    spec.components.schema(
        "InferenceResponse",
        {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": TENSOR},
            },
        },
    )
    spec.components.schema("ProtocolError", PROTOCOL_ERROR)


def infer_operation(name: str, slug: str, errors: Responses, versioned: bool = False) -> dict[str, Any]:
    protocol_error = {
        "description": "A request the protocol does not allow, or arguments the model refuses",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProtocolError"}}},
    }
    return {
        "tags": [name],
        "summary": f"Infer with {name} (Open Inference Protocol, V2 REST)",
        "description": "One tensor per argument (shape [N]: N rows, through the batching path), or one [N, k] "
        "tensor for a model whose inputs have no names. Binary tensor data (tritonclient's "
        "default) is accepted after the JSON header (Inference-Header-Content-Length).",
        "operationId": f"{slug}_infer{'_version' if versioned else ''}",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        },
        "responses": {
            "200": {
                "description": "The output tensors",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}}},
            },
            "400": protocol_error,
            **errors(404, 409, 413, 503),
        },
    }
