"""HTTP handlers of keys and access: tokens, users, the audit log, models' access lists."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..auth.principal import SCOPES
from ..auth.tokens import VISIBLE, check_scopes, parse_duration
from ..errors import ArgumentError
from .bodies import read_json_object
from .keys import GATE, MODELS, PRINCIPAL
from .readers import query_int
from .responses import json_response


def _strings(value: Any) -> list[str] | None:
    """A list of at least one non-empty string, else None."""
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    return None


# --- tokens --------------------------------------------------------------------------

TOKEN_FIELDS = ("name", "scopes", "models", "user", "expires")


async def create_token(request: web.Request) -> web.Response:
    """``POST /v2/tokens``: ``{name, scopes, models?, user?, expires?}``; the token is shown once.

    ``models`` limits the token to those models (null or left out: every model its scopes
    allow); ``expires`` is a duration (``30d``) or seconds; every mistake is named in one 422.
    """
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {k: ["Unknown field."] for k in sorted(set(body) - set(TOKEN_FIELDS))}
    name = body.get("name")
    if not isinstance(name, str) or not re.search(VISIBLE, name):
        errors["name"] = ["A name is required (what the token is for)."]
    scopes = _strings(body.get("scopes"))
    unknown = [s for s in scopes or () if s not in SCOPES]
    if scopes is None or unknown:
        errors["scopes"] = [
            (f"Unknown: {', '.join(unknown)}. " if unknown else "") + f"A list of at least one of: {', '.join(SCOPES)}."
        ]
    models = body.get("models")
    if models is not None and _strings(models) is None:
        errors["models"] = ["A list of at least one model name, or null for every model."]
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        errors["user"] = ["Must be a user id (a non-empty string)."]
    expires = body.get("expires")
    expires_in = None
    if expires is not None:
        try:
            if isinstance(expires, bool) or not isinstance(expires, (str, int)):
                raise ValueError(f"expected a duration such as 30d or a number of seconds, got {expires!r}")
            expires_in = parse_duration(str(expires))
        except ValueError as exc:
            errors["expires"] = [str(exc)]
    if errors:
        raise ArgumentError(
            "Invalid token request: " + "; ".join(f"{k}: {v[0]}" for k, v in errors.items()),
            errors,
            accepted=list(TOKEN_FIELDS),
        )
    assert isinstance(name, str) and scopes is not None  # else errors named them
    issued = await request.app[GATE].create_token(
        request[PRINCIPAL],
        name=name.strip(),
        scopes=check_scopes(scopes),
        models=models,
        user_id=user,
        expires_in=expires_in,
    )
    return json_response({**issued.record.document(), "token": issued.token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    return json_response({"tokens": [t.document() for t in request.app[GATE].tokens()]})


async def revoke_token(request: web.Request) -> web.Response:
    record = await request.app[GATE].revoke_token(request[PRINCIPAL], request.match_info["id"])
    return json_response(record.document())


# --- users and the audit log ------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    return json_response({"users": [u.document() for u in request.app[GATE].users()]})


async def create_user(request: web.Request) -> web.Response:
    """``POST /v2/users``: ``{userId, username?, email?}`` (JWT users are added when first seen)."""
    body = await read_json_object(request)
    errors = {k: ["Unknown field."] for k in sorted(set(body) - {"userId", "username", "email"})}
    for key in ("userId", "username", "email"):
        if key in body and body[key] is not None and (not isinstance(body[key], str) or not body[key]):
            errors[key] = ["Must be a non-empty string."]
    if not body.get("userId"):
        errors["userId"] = ["Missing data for required field."]
    if errors:
        raise ArgumentError(f"Invalid user: {', '.join(errors)}", errors)
    user = await request.app[GATE].add_user(request[PRINCIPAL], body["userId"], body.get("username"), body.get("email"))
    return json_response(user.document(), status=201)


async def audit_log(request: web.Request) -> web.Response:
    """``GET /v2/audit?limit=&offset=``: the writes, newest first (the total in X-Total-Count)."""
    limit, offset = query_int(request, "limit", 100, 1, 1000), query_int(request, "offset", 0, 0, None)
    total, entries = await request.app[GATE].audit_entries(limit, offset)
    return json_response({"entries": entries}, headers={"X-Total-Count": str(total)})


# --- a model's access list (DataRobot's shape) ------------------------------------------------


def _uploaded(request: web.Request) -> str:
    name = request.match_info["name"]
    models = request.app[MODELS]
    if not models.is_uploaded(name):
        models.check_known(name)  # 404 for an unknown name
        raise ArgumentError(
            f"'{name}' is a plugin: access lists are for uploaded models; plugins are "
            "shared with scopes (and --public-models)",
            {"name": ["Not an uploaded model."]},
        )
    return name


async def get_access(request: web.Request) -> web.Response:
    """``{count, data: [{userId, username, role, canShare}], totalCount}``."""
    items = request.app[GATE].access_list(_uploaded(request))
    return json_response({"count": len(items), "totalCount": len(items), "next": None, "previous": None, "data": items})


async def patch_access(request: web.Request) -> web.Response:
    """``{"data": [{userId | username, role | null, canShare}]}``; 204 when applied."""
    name = _uploaded(request)
    body = await read_json_object(request)
    await request.app[GATE].change_access(request[PRINCIPAL], name, body.get("data"))
    return web.Response(status=204)
