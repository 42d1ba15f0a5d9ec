"""The OpenAPI document's part for the environments of uploaded versions: the build of a
version uploaded with requirements (DataRobot's ``dependencyBuild``) and its log."""

from __future__ import annotations

from typing import Any, Callable

from apispec import APISpec

from ..registry.records import BuildStatus
from .openapi_schemas import json_response

Responses = Callable[..., dict[str, Any]]
REQUIREMENTS = {
    "type": "array",
    "items": {"type": "string"},
    "description": "What the version's own environment holds (requirement strings, normalised)",
}


def components(spec: APISpec) -> None:
    stamp = {"type": "string", "nullable": True}
    spec.components.schema(
        "DependencyBuild",
        {
            "type": "object",
            "required": ["buildStatus", "buildLogLocation", "requirements"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "buildStatus": {
                    "type": "string",
                    "enum": list(BuildStatus),
                    "description": "submitted, processing, then success (the version is ready) or failed",
                },
                "buildStart": {**stamp, "description": "When the build started"},
                "buildEnd": {**stamp, "description": "When the build ended"},
                "buildLogLocation": {"type": "string", "description": "Where its log is (text/plain)"},
                "environment": {
                    "type": "string",
                    "nullable": True,
                    "description": "The environment's key (the SHA-256 of its lock), once built",
                },
                "requirements": REQUIREMENTS,
                "error": {"type": "string", "nullable": True, "description": "Why it failed"},
                "failedRequirement": {
                    "type": "string",
                    "nullable": True,
                    "description": "The requirement that could not be resolved or installed",
                },
            },
        },
    )


def build_paths(spec: APISpec, parameters: list[dict[str, Any]], errors: Responses) -> None:
    """``.../versions/{version}/dependencyBuild`` and ``.../dependencyBuildLog``."""
    tag = ["registry"]
    spec.path(
        "/v2/models/{name}/versions/{version}/dependencyBuild",
        parameters=parameters,
        operations={
            "get": {
                "tags": tag,
                "summary": "The build of the environment of a version uploaded with requirements",
                "description": "Poll it after an upload with `requirements` (202): `buildStatus` goes from "
                "`submitted` and `processing` to `success` (the version is `ready`, and current if newer "
                "than the current version) or `failed` (the version is `error`; `error` says why, "
                "`failedRequirement` names the requirement uv could not resolve or install). 404 for a "
                "version uploaded without requirements.",
                "operationId": "get_dependency_build",
                "responses": {
                    "200": json_response({"$ref": "#/components/schemas/DependencyBuild"}, "The build"),
                    **errors(404, 422),
                },
            }
        },
    )
    spec.path(
        "/v2/models/{name}/versions/{version}/dependencyBuildLog",
        parameters=parameters,
        operations={
            "get": {
                "tags": tag,
                "summary": "The build's log: the uv commands it ran and what they printed",
                "operationId": "get_dependency_build_log",
                "parameters": [
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                        "description": "Skip the first bytes (X-Log-Size of the last answer)",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The log so far (X-Log-Size: its size; X-Build-Status: the build's status)",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **errors(404, 422),
                },
            }
        },
    )
