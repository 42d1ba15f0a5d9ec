"""Model tests and feature impact in the OpenAPI document (for every model that predicts)."""

from __future__ import annotations

from typing import Any, Callable

from ..quality.checks import CHECKS, LEVELS, STATUSES
from ..quality.samples import MAX_ROWS

Responses = Callable[..., dict[str, Any]]
UUID = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}


GENERIC_ROW = {
    "type": "object",
    "minProperties": 1,
    "description": "One value per feature",
    "additionalProperties": {"nullable": True, "oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
}
OPTIONS: dict[str, dict[str, dict[str, Any]]] = {  # what each kind of job takes besides its rows: their schemas
    "tests": {
        "configuration": {
            "type": "object",
            "properties": {c: {"type": "string", "enum": list(LEVELS)} for c in CHECKS},
        },
        "ignore": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Keys left out of comparisons (default: pid)",
        },
        "rowCount": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer", "minimum": 0},
    },
    "feature-impact": {
        "rowCount": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 1000},
        "repeats": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}


def _request_body(segment: str, row: Any, rows_required: bool) -> dict[str, Any]:
    """JSON ``{rows, ...options}`` or a form with the rows as a CSV ``data`` part. ``row``: the
    schema of one row (the model's predict arguments), else any features; ``rows_required``:
    false only where a reference dataset stands in for them."""
    rows = {"type": "array", "minItems": 1, "maxItems": MAX_ROWS, "items": row if row is not None else GENERIC_ROW}
    options = OPTIONS[segment]
    json_body = {"type": "object", "additionalProperties": False, "properties": {"rows": rows, **options}}
    form_fields = {
        name: {"type": "string", "description": "As JSON"} if schema["type"] in ("object", "array") else schema
        for name, schema in options.items()
    }
    form = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "data": {"type": "string", "format": "binary", "description": "The rows as CSV, with a header line"},
            **form_fields,
        },
    }
    if rows_required:
        json_body["required"], form["required"] = ["rows"], ["data"]
    return {
        "required": rows_required,
        "content": {"application/json": {"schema": json_body}, "multipart/form-data": {"schema": form}},
    }


def components(spec: Any) -> None:
    obj = {"type": "object"}
    check = {**obj, "properties": {"status": {"type": "string", "enum": list(STATUSES)}, "message": {"type": "string"}}}
    spec.components.schema(
        "TestJob",
        {
            **obj,
            "properties": {
                "id": {"type": "string"},
                "model": {"type": "string"},
                "status": {"type": "string"},
                "overallStatus": {"type": "string", "enum": list(STATUSES)},
                "testingStatus": {**obj, "properties": {c: check for c in CHECKS}},
                "configuration": obj,
                "links": obj,
            },
        },
    )
    spec.components.schema(
        "ImpactJob",
        {
            **obj,
            "properties": {
                "id": {"type": "string"},
                "model": {"type": "string"},
                "status": {"type": "string"},
                "count": {"type": "integer"},
                "rowCount": {"type": "integer"},
                "ranRedundancyDetection": {"type": "boolean"},
                "featureImpacts": {
                    "type": "array",
                    "items": {
                        **obj,
                        "properties": {
                            "featureName": {"type": "string"},
                            "impactNormalized": {"type": "number"},
                            "impactUnnormalized": {"type": "number"},
                            "redundantWith": {"type": "string", "nullable": True},
                        },
                    },
                },
                "links": obj,
            },
        },
    )


def quality_paths(
    name: str, slug: str, errors: Responses, row: Any = None, rows_required: bool = True
) -> dict[str, dict[str, Any]]:
    """The tests and feature impact paths of one model (``row``, ``rows_required``: see
    :func:`_request_body`)."""
    tag = [name]
    paths: dict[str, dict[str, Any]] = {}
    for segment, what, job in (("tests", "model tests", "TestJob"), ("feature-impact", "feature impact", "ImpactJob")):
        base = f"/v2/models/{name}/{segment}/"
        schema = {"$ref": f"#/components/schemas/{job}"}
        op = segment.replace("-", "_")
        paths[base] = {
            "post": {
                "tags": tag,
                "summary": f"Start {what} of {name} (a job: 202 with Location)",
                "operationId": f"{slug}_start_{op}",
                "requestBody": _request_body(segment, row, rows_required),
                "responses": {
                    "202": {"description": "The job", "content": {"application/json": {"schema": schema}}},
                    **errors(400, 409, 415, 422, 503),
                },
            },
            "get": {
                "tags": tag,
                "summary": f"The {what} of {name}",
                "operationId": f"{slug}_list_{op}",
                "responses": {
                    "200": {
                        "description": "The jobs",
                        "content": {"application/json": {"schema": {"type": "array", "items": schema}}},
                    },
                    **errors(422),
                },
            },
        }
        paths[base + "{uuid}"] = {
            "parameters": [UUID],
            **{
                "get": {
                    "tags": tag,
                    "summary": f"Status and result of {what}",
                    "operationId": f"{slug}_get_{op}",
                    "responses": {
                        "200": {"description": "The job", "content": {"application/json": {"schema": schema}}},
                        **errors(404),
                    },
                },
                "delete": {
                    "tags": tag,
                    "summary": f"Cancel {what}",
                    "operationId": f"{slug}_cancel_{op}",
                    "responses": {
                        "200": {
                            "description": "The cancelled job",
                            "content": {"application/json": {"schema": schema}},
                        },
                        **errors(404, 409),
                    },
                },
            },
        }
        text = {
            "200": {"description": "The log", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **errors(404),
        }
        paths[base + "{uuid}/log"] = {
            "parameters": [UUID],
            "get": {"tags": tag, "summary": "The job's log", "operationId": f"{slug}_{op}_log", "responses": text},
        }
    paths[f"/v2/models/{name}/tests/{{uuid}}/log/tail"] = {
        "parameters": [UUID],
        "get": {
            "tags": tag,
            "summary": "The last lines of the log",
            "operationId": f"{slug}_tests_log_tail",
            "parameters": [
                {
                    "name": "lines",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 20},
                }
            ],
            "responses": {
                "200": {"description": "The lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **errors(404, 422),
            },
        },
    }
    paths[f"/v2/models/{name}/feature-impact/{{uuid}}/plot.png"] = {
        "parameters": [UUID],
        "get": {
            "tags": tag,
            "summary": "The impacts as a bar chart",
            "operationId": f"{slug}_feature_impact_plot",
            "responses": {
                "200": {
                    "description": "A PNG",
                    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                },
                **errors(404, 409),
            },
        },
    }
    return paths
