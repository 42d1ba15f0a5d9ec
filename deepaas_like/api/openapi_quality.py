"""Model tests and feature impact in the OpenAPI document (for every model that predicts)."""

from __future__ import annotations

from typing import Any, Callable

from ..quality.checks import CHECKS, LEVELS, STATUSES

Responses = Callable[..., dict[str, Any]]
UUID = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}


def components(spec: Any) -> None:
    obj = {"type": "object"}
    value = {"nullable": True, "oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
    rows = {"type": "array", "minItems": 1, "items": {"type": "object", "minProperties": 1,
                                                      "additionalProperties": value,
                                                      "description": "One value per feature"}}
    spec.components.schema("TestRequest", {**obj, "properties": {
        "rows": rows,
        "configuration": {**obj, "properties": {c: {"type": "string", "enum": list(LEVELS)} for c in CHECKS}},
        "ignore": {"type": "array", "items": {"type": "string"}, "description": "Keys left out of comparisons "
                   "(default: pid)"},
        "rowCount": {"type": "integer", "minimum": 1}, "seed": {"type": "integer", "minimum": 0}}})
    check = {**obj, "properties": {"status": {"type": "string", "enum": list(STATUSES)},
                                   "message": {"type": "string"}}}
    spec.components.schema("TestJob", {**obj, "properties": {
        "id": {"type": "string"}, "model": {"type": "string"}, "status": {"type": "string"},
        "overallStatus": {"type": "string", "enum": list(STATUSES)},
        "testingStatus": {**obj, "properties": {c: check for c in CHECKS}},
        "configuration": obj, "links": obj}})
    spec.components.schema("ImpactRequest", {**obj, "properties": {
        "rows": rows, "rowCount": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 1000},
        "repeats": {"type": "integer", "minimum": 1, "maximum": 1000}}})
    spec.components.schema("ImpactJob", {**obj, "properties": {
        "id": {"type": "string"}, "model": {"type": "string"}, "status": {"type": "string"},
        "count": {"type": "integer"}, "rowCount": {"type": "integer"}, "ranRedundancyDetection": {"type": "boolean"},
        "featureImpacts": {"type": "array", "items": {**obj, "properties": {
            "featureName": {"type": "string"}, "impactNormalized": {"type": "number"},
            "impactUnnormalized": {"type": "number"}, "redundantWith": {"type": "string", "nullable": True}}}},
        "links": obj}})


def quality_paths(name: str, slug: str, errors: Responses) -> dict[str, dict[str, Any]]:
    """The tests and feature impact paths of one model."""
    tag = [name]
    paths: dict[str, dict[str, Any]] = {}
    for segment, what, request, job in (("tests", "model tests", "TestRequest", "TestJob"),
                                         ("feature-impact", "feature impact", "ImpactRequest", "ImpactJob")):
        base = f"/v2/models/{name}/{segment}/"
        schema = {"$ref": f"#/components/schemas/{job}"}
        body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "data": {"type": "string", "format": "binary", "description": "The rows as CSV"}}}}}
        op = segment.replace("-", "_")
        paths[base] = {
            "post": {"tags": tag, "summary": f"Start {what} of {name} (a job: 202 with Location)",
                     "operationId": f"{slug}_start_{op}", "requestBody": {"content": body},
                     "responses": {"202": {"description": "The job", "content": {"application/json": {
                         "schema": schema}}}, **errors(400, 409, 415, 422, 503)}},
            "get": {"tags": tag, "summary": f"The {what} of {name}", "operationId": f"{slug}_list_{op}",
                    "responses": {"200": {"description": "The jobs", "content": {"application/json": {
                        "schema": {"type": "array", "items": schema}}}}, **errors(422)}}}
        paths[base + "{uuid}"] = {"parameters": [UUID], **{
            "get": {"tags": tag, "summary": f"Status and result of {what}", "operationId": f"{slug}_get_{op}",
                    "responses": {"200": {"description": "The job", "content": {"application/json": {
                        "schema": schema}}}, **errors(404)}},
            "delete": {"tags": tag, "summary": f"Cancel {what}", "operationId": f"{slug}_cancel_{op}",
                       "responses": {"200": {"description": "The cancelled job", "content": {"application/json": {
                           "schema": schema}}}, **errors(404, 409)}}}}
        text = {"200": {"description": "The log", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **errors(404)}
        paths[base + "{uuid}/log"] = {"parameters": [UUID], "get": {
            "tags": tag, "summary": "The job's log", "operationId": f"{slug}_{op}_log", "responses": text}}
    paths[f"/v2/models/{name}/tests/{{uuid}}/log/tail"] = {"parameters": [UUID], "get": {
        "tags": tag, "summary": "The last lines of the log", "operationId": f"{slug}_tests_log_tail",
        "parameters": [{"name": "lines", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                     "maximum": 10000, "default": 20}}],
        "responses": {"200": {"description": "The lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **errors(404, 422)}}}
    paths[f"/v2/models/{name}/feature-impact/{{uuid}}/plot.png"] = {"parameters": [UUID], "get": {
        "tags": tag, "summary": "The impacts as a bar chart", "operationId": f"{slug}_feature_impact_plot",
        "responses": {"200": {"description": "A PNG", "content": {"image/png": {"schema": {
            "type": "string", "format": "binary"}}}}, **errors(404, 409)}}}
    return paths
