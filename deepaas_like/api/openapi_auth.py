"""Keys and access in the OpenAPI document: tokens, users, the audit log, access lists.

The admin routes have one path each; a model's access list is for uploaded models only,
so it is documented once with ``{name}``, like the registry's routes. With ``--auth`` the
bearer requirement of each operation is added with every other's (``declare_security``).
"""

from __future__ import annotations

from typing import Any, Callable

from ..auth.principal import SCOPES, Role
from ..auth.sharing import MAX_ACCESS_ITEMS
from ..auth.tokens import DURATION_PATTERN, DURATION_UNITS, VISIBLE
from .openapi_registry import NAME

Responses = Callable[..., dict[str, Any]]
TAG = ["keys and access"]
REFUSED_OFF_LOOPBACK = (
    "Without --auth, the admin routes answer only on a loopback address (403 elsewhere, "
    "saying how to turn authentication on)."
)
MOST_SECONDS = 10 ** DURATION_UNITS["s"][1] - 1


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def components(spec: Any) -> None:
    obj = {"type": "object"}
    text = {"type": "string", "minLength": 1}
    maybe_text = {**text, "nullable": True}
    when = {"type": "string", "nullable": True, "description": "ISO 8601, UTC"}
    scope = {"type": "string", "enum": [str(s) for s in SCOPES]}
    spec.components.schema(
        "TokenRequest",
        {
            **obj,
            "required": ["name", "scopes"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": VISIBLE, "description": "What the token is for"},
                "scopes": {"type": "array", "minItems": 1, "items": scope},
                "models": {
                    "type": "array",
                    "minItems": 1,
                    "items": text,
                    "nullable": True,
                    "description": "Limit the token to these models (null: every model its scopes allow)",
                },
                "user": {**maybe_text, "description": "The user the token acts for (owner of what it uploads)"},
                "expires": {
                    "description": "Its lifetime: a duration (30d, 12h, 90m, 2w, 45s) or seconds, at most "
                    "a few centuries; null or left out: it does not expire",
                    "anyOf": [
                        {"type": "string", "pattern": DURATION_PATTERN, "nullable": True},
                        {"type": "integer", "minimum": 0, "maximum": MOST_SECONDS},
                    ],
                },
            },
        },
    )
    token = {
        "id": {"type": "string", "description": "Names the token in lists and revocations"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": scope},
        "models": {"type": "array", "items": {"type": "string"}, "nullable": True},
        "user_id": {"type": "string", "nullable": True},
        "created_at": {"type": "string"},
        "expires_at": when,
        "last_used_at": when,
        "revoked_at": when,
    }
    spec.components.schema("Token", {**obj, "required": list(token), "properties": token})
    spec.components.schema(
        "IssuedToken",
        {
            **obj,
            "required": [*token, "token"],
            "properties": {
                **token,
                "token": {
                    "type": "string",
                    "pattern": "^dlk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$",
                    "description": "The bearer token: shown this once, never stored",
                },
            },
        },
    )
    spec.components.schema(
        "UserRequest",
        {
            **obj,
            "required": ["userId"],
            "additionalProperties": False,
            "properties": {"userId": text, "username": maybe_text, "email": maybe_text},
        },
    )
    spec.components.schema(
        "User",
        {
            **obj,
            "required": ["userId", "username", "email"],
            "properties": {
                "userId": {"type": "string"},
                "username": {"type": "string", "nullable": True},
                "email": {"type": "string", "nullable": True},
            },
        },
    )
    spec.components.schema(
        "AuditEntry",
        {
            **obj,
            "required": ["id", "at", "actor", "action", "target", "detail"],
            "properties": {
                "id": {"type": "integer"},
                "at": {"type": "string"},
                "actor": {"type": "string", "nullable": True, "description": "A user, token:<id>, or local"},
                "action": {"type": "string", "example": "token.create"},
                "target": {"type": "string", "nullable": True},
                "detail": obj,
            },
        },
    )
    roles = [str(r) for r in Role]
    role = {"type": "string", "enum": roles}
    spec.components.schema(
        "AccessItem",
        {
            **obj,
            "required": ["userId", "username", "role", "canShare"],
            "properties": {
                "userId": {"type": "string"},
                "username": {"type": "string", "nullable": True},
                "role": role,
                "canShare": {"type": "boolean"},
            },
        },
    )
    page = {"type": "string", "nullable": True, "description": "Always null: the whole list is one page"}
    spec.components.schema(
        "AccessList",
        {
            **obj,
            "required": ["count", "totalCount", "data"],
            "properties": {
                "count": {"type": "integer"},
                "totalCount": {"type": "integer"},
                "next": page,
                "previous": page,
                "data": {
                    "type": "array",
                    "items": _ref("AccessItem"),
                    "description": "The owner first, then the grants",
                },
            },
        },
    )
    spec.components.schema(
        "AccessChange",
        {
            **obj,
            "required": ["role"],
            "properties": {
                "userId": {"type": "string", "description": "The user, by id ..."},
                "username": {"type": "string", "description": "... or by name (not both: 400)"},
                "role": {
                    "type": "string",
                    "enum": [*roles, None],
                    "nullable": True,
                    "description": "null removes the user from the list",
                },
                "canShare": {"type": "boolean", "description": "May give others access (default: only an OWNER)"},
            },
            "oneOf": [{"required": ["userId"]}, {"required": ["username"]}],
        },
    )


def auth_paths(spec: Any, errors: Responses) -> None:
    """The admin routes (tokens, users, audit) and a model's access list."""
    admin: dict[str, Any] = {"tags": TAG, "description": REFUSED_OFF_LOOPBACK}
    body = {"application/json": {"schema": _ref("TokenRequest")}}
    token = _ref("Token")
    spec.path(
        "/v2/tokens",
        operations={
            "post": {
                **admin,
                "summary": "Create an API token (the token is in the answer, and only there)",
                "operationId": "create_token",
                "requestBody": {"required": True, "content": body},
                "responses": {"201": _json(_ref("IssuedToken"), "The token, with its secret"), **errors(400, 403, 422)},
            },
            "get": {
                **admin,
                "summary": "Every token, revoked and expired ones too (never their secrets)",
                "operationId": "list_tokens",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["tokens"],
                            "properties": {"tokens": {"type": "array", "items": token}},
                        },
                        "The tokens, oldest first",
                    ),
                    **errors(403),
                },
            },
        },
    )
    token_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The token's id (12 hex characters, after dlk_)",
    }
    spec.path(
        "/v2/tokens/{id}",
        parameters=[token_id],
        operations={
            "delete": {
                **admin,
                "summary": "Revoke a token: refused from the next request on",
                "operationId": "revoke_token",
                "responses": {"200": _json(token, "The revoked token"), **errors(403, 404, 409)},
            }
        },
    )
    spec.path(
        "/v2/users",
        operations={
            "get": {
                **admin,
                "summary": "Every known user (JWT users are added when first seen)",
                "operationId": "list_users",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["users"],
                            "properties": {"users": {"type": "array", "items": _ref("User")}},
                        },
                        "The users, by id",
                    ),
                    **errors(403),
                },
            },
            "post": {
                **admin,
                "summary": "Add a user, or change a known one's username and email",
                "operationId": "create_user",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("UserRequest")}}},
                "responses": {"201": _json(_ref("User"), "The user"), **errors(400, 403, 409, 422)},
            },
        },
    )
    spec.path(
        "/v2/audit",
        operations={
            "get": {
                **admin,
                "summary": "The writes (uploads, versions, archives, config, access, tokens, users), newest first",
                "operationId": "audit_log",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    },
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                ],
                "responses": {
                    "200": {
                        **_json(
                            {
                                "type": "object",
                                "required": ["entries"],
                                "properties": {"entries": {"type": "array", "items": _ref("AuditEntry")}},
                            },
                            "The entries (the total in X-Total-Count)",
                        ),
                        "headers": {"X-Total-Count": {"schema": {"type": "integer"}}},
                    },
                    **errors(403, 422),
                },
            }
        },
    )
    sharing = "Uploaded models only (422 for a plugin: plugins are shared with scopes and --public-models)."
    spec.path(
        "/v2/models/{name}/access-control",
        parameters=[NAME],
        operations={
            "get": {
                "tags": TAG,
                "summary": "Who may use the model, and with which role",
                "description": sharing,
                "operationId": "get_access_control",
                "responses": {"200": _json(_ref("AccessList"), "The access list"), **errors(404, 422)},
            },
            "patch": {
                "tags": TAG,
                "summary": "Give, change or remove users' roles on the model",
                "description": f"{sharing} The changes apply together or not at all: 409 when they would leave "
                "the model without an owner, 422 for an unknown user or role.",
                "operationId": "update_access_control",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "data": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": MAX_ACCESS_ITEMS,
                                        "items": _ref("AccessChange"),
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {"204": {"description": "Applied"}, **errors(400, 403, 404, 409, 422)},
            },
        },
    )
