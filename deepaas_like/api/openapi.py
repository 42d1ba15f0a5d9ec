"""The OpenAPI 3 document, built once at start from every model's own declarations (and
again when the registry's models change), with each operation's access from its route's
policy. Its parts: the shared schemas (:mod:`.openapi_schemas`), each model's paths
(:mod:`.openapi_models`), the registry's (:mod:`.openapi_registry`,
:mod:`.openapi_neurodeploy`), the inference protocol's, the quality jobs' and the admin
routes'."""

from __future__ import annotations

import json
from typing import Any, Callable

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema
from marshmallow import fields as ma_fields

from .. import __version__
from ..arguments import is_file_field
from ..auth.policy import Policy
from ..legacy import legacy_vocabulary_allowed
from ..models import ModelSet
from ..settings import Settings
from . import (
    openapi_auth,
    openapi_explain,
    openapi_models,
    openapi_neurodeploy,
    openapi_oip,
    openapi_quality,
    openapi_registry,
    openapi_schemas,
)
from .openapi_schemas import error_responses

OPENAPI_VERSION = "3.0.3"
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


def _inline(schema: type[Schema]) -> str | None:
    """No name for any schema: each is written out where it is used (apispec's None)."""
    return None


def _static_paths(spec: APISpec) -> None:
    """The server's own routes: API versions, the model list, health and metrics."""

    def get(
        tag: str, summary: str, schema: dict[str, Any], op_id: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
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
    # apispec documents a resolver that answers None (write the schema inline), but types it str.
    marshmallow_plugin = MarshmallowPlugin(schema_name_resolver=_inline)  # type: ignore[arg-type]
    spec = APISpec(
        title="deepaas_like",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[marshmallow_plugin],
        info={"description": DESCRIPTION + _failed_note(models)},
        servers=[{"url": settings.base_path or "/"}],
        tags=[{"name": name, "description": str(m.metadata.get("description") or "")} for name, m in models.items()],
    )
    converter = marshmallow_plugin.converter
    assert converter is not None  # APISpec() has initialized its plugins
    converter.add_attribute_function(_file_property)
    openapi_schemas.components(spec)
    _static_paths(spec)
    with legacy_vocabulary_allowed():
        for model in models.values():
            openapi_models.plugin_paths(spec, model, settings)
        openapi_registry.components(spec)
        openapi_neurodeploy.components(spec)
        openapi_oip.components(spec)
        openapi_quality.components(spec)
        openapi_explain.components(spec)
        openapi_auth.components(spec)
        openapi_registry.registry_paths(spec, error_responses)
        openapi_neurodeploy.neurodeploy_paths(spec, error_responses)
        if settings.predict_endpoint:
            openapi_registry.version_paths(spec, error_responses)
        openapi_auth.auth_paths(spec, error_responses)
        if models.uploads is not None:
            openapi_models.uploaded_model_paths(
                spec, models.uploads, settings.predict_endpoint, public_only=settings.auth
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
            operation.setdefault("responses", {}).update(error_responses(401, 403))


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
