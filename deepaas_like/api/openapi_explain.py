"""Prediction explanations in the OpenAPI document (for every plugin that predicts, and every
uploaded model)."""

from __future__ import annotations

from typing import Any, Callable

from ..quality.explanations import MAX_BACKGROUND_ROWS
from .openapi_quality import GENERIC_ROW, UUID

Responses = Callable[..., dict[str, Any]]
OBJ = {"type": "object"}
OPTIONS: dict[str, dict[str, Any]] = {
    "maxExplanations": {"type": "integer", "minimum": 0, "maximum": 100, "default": 3},
    "thresholdLow": {"type": "number", "description": "Explain only predictions below this (or above thresholdHigh)"},
    "thresholdHigh": {"type": "number", "description": "Explain only predictions above this (or below thresholdLow)"},
    "explainClass": {"type": "string", "description": "The class explained (default: the predicted one)"},
}
ANSWER = {"application/json": {"schema": {"$ref": "#/components/schemas/Explanations"}}}
INITIALIZATION = {"application/json": {"schema": {"$ref": "#/components/schemas/ExplanationsInitialization"}}}
JOB = {"application/json": {"schema": {"type": "object"}}}


def components(spec: Any) -> None:
    explanation = {
        **OBJ,
        "properties": {
            "feature": {"type": "string"},
            "featureValue": {"nullable": True},
            "strength": {"type": "number"},
            "qualitativeStrength": {"type": "string", "enum": ["+++", "++", "+", "-", "--", "---"]},
            "label": {"type": "string"},
        },
    }
    row = {
        **OBJ,
        "properties": {
            "rowId": {"type": "integer"},
            "prediction": {"nullable": True},
            "predictionValues": {"type": "array", "items": OBJ},
            "explainedClass": {"type": "string"},
            "expectedValue": {"type": "number"},
            "predictionExplanations": {"type": "array", "items": explanation},
        },
    }
    spec.components.schema(
        "Explanations",
        {**OBJ, "properties": {"model": {"type": "string"}, "data": {"type": "array", "items": row}}},
    )
    spec.components.schema(
        "ExplanationsInitialization",
        {
            **OBJ,
            "properties": {
                "model": {"type": "string"},
                "features": {"type": "array", "items": {"type": "string"}},
                "rowCount": {"type": "integer"},
                "rows": {"type": "array", "items": OBJ},
                "created": {"type": "number"},
                "job": {"type": "string"},
            },
        },
    )


def explain_paths(name: str, slug: str, errors: Responses, row: Any = None) -> dict[str, dict[str, Any]]:
    """The explain and explanations-initialization paths of one model (``row``: the schema of
    one row, its predict arguments as JSON, or an uploaded model's object or list of values;
    else any features)."""
    tag = [name]
    one = row if row is not None else GENERIC_ROW
    rows = {"type": "array", "minItems": 1, "items": one}
    background = {**rows, "maxItems": MAX_BACKGROUND_ROWS}
    explain_body = {"type": "object", "properties": {"rows": rows, **OPTIONS}}
    init_form = {
        "type": "object",
        "properties": {"data": {"type": "string", "format": "binary", "description": "The rows as CSV"}},
    }
    base = f"/v2/models/{name}/explanations-initialization/"
    return {
        f"/v2/models/{name}/explain": {
            "post": {
                "tags": tag,
                "summary": f"Explain predictions of {name} (the arguments of one, or rows)",
                "description": "The model's arguments as for predict, or {rows: [...]}; the strengths are "
                "Shapley values (shap) against the model's explanations initialization (an uploaded model's: "
                "else its version's reference dataset; a scikit-learn tree model's by its trees). A Kernel "
                "explanation that would take more than 10 s is refused (422, saying how many rows fit). "
                "An Open Inference "
                "Protocol request ({inputs: [tensor...], parameters: {options}}) is answered with tensors: "
                "strength [rows, features] FP64, expected_value, prediction, explained.",
                "operationId": f"{slug}_explain",
                "parameters": [{"name": key, "in": "query", "schema": schema} for key, schema in OPTIONS.items()],
                "requestBody": {"required": False, "content": {"application/json": {"schema": explain_body}}},
                "responses": {
                    "200": {"description": "Each row's prediction and explanation", "content": ANSWER},
                    **errors(400, 409, 415, 422, 500, 501, 503),
                },
            }
        },
        base: {
            "post": {
                "tags": tag,
                "summary": f"Initialize prediction explanations of {name}: its background rows (a job)",
                "operationId": f"{slug}_start_explanations_initialization",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "required": ["rows"], "properties": {"rows": background}}
                        },
                        "multipart/form-data": {"schema": init_form},
                    },
                },
                "responses": {"202": {"description": "The job", "content": JOB}, **errors(400, 409, 415, 422, 501)},
            },
            "get": {
                "tags": tag,
                "summary": f"The explanations initialization of {name}",
                "operationId": f"{slug}_get_explanations_initialization",
                "responses": {"200": {"description": "Its rows", "content": INITIALIZATION}, **errors(404)},
            },
            "delete": {
                "tags": tag,
                "summary": f"Remove the explanations initialization of {name}",
                "operationId": f"{slug}_delete_explanations_initialization",
                "responses": {"204": {"description": "Removed"}, **errors(404)},
            },
        },
        base + "{uuid}": {
            "parameters": [UUID],
            "get": {
                "tags": tag,
                "summary": "The initialization's job",
                "operationId": f"{slug}_get_explanations_initialization_job",
                "responses": {"200": {"description": "The job", "content": JOB}, **errors(404)},
            },
            "delete": {
                "tags": tag,
                "summary": "Cancel the initialization's job",
                "operationId": f"{slug}_cancel_explanations_initialization_job",
                "responses": {"200": {"description": "The job, cancelled", "content": JOB}, **errors(404, 409)},
            },
        },
        base + "{uuid}/log": {
            "parameters": [UUID],
            "get": {
                "tags": tag,
                "summary": "The initialization job's log",
                "operationId": f"{slug}_explanations_initialization_log",
                "responses": {
                    "200": {"description": "The log", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **errors(404),
                },
            },
        },
    }
