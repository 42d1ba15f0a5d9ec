"""The fields of a plugin that runs in an environment of its own, rebuilt in the server from
their portable description (:mod:`deepaas_like.portable`) with the server's marshmallow.

What JSON Schema says of a field comes back as the same marshmallow field and validators
(``OneOf``, ``Range``, ``Length``, ``Regexp``), so a request is refused with the same 422
and documented the same way as if the plugin were imported here.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import marshmallow
from marshmallow import fields as ma_fields
from marshmallow import validate as ma_validate

from .fields import File

STRINGS: dict[str | None, type[ma_fields.Field]] = {
    None: ma_fields.String,
    "date-time": ma_fields.DateTime,
    "date": ma_fields.Date,
    "time": ma_fields.Time,
    "uri": ma_fields.Url,
    "email": ma_fields.Email,
    "uuid": ma_fields.UUID,
}
SCALARS: dict[str, type[ma_fields.Field]] = {
    "integer": ma_fields.Integer,
    "number": ma_fields.Float,
    "boolean": ma_fields.Boolean,
}


def _validators(schema: Mapping[str, Any]) -> list[ma_validate.Validator]:
    """The field's validators, in the order the plugin declared them (``x-checks``)."""
    found: dict[str, ma_validate.Validator] = {}
    if isinstance(schema.get("enum"), list):
        found["OneOf"] = ma_validate.OneOf(schema["enum"])
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None or high is not None:
        found["Range"] = ma_validate.Range(
            min=low,
            max=high,
            min_inclusive="exclusiveMinimum" not in schema,
            max_inclusive="exclusiveMaximum" not in schema,
        )
    array = schema.get("type") == "array"
    shortest = schema.get("minItems" if array else "minLength")
    longest = schema.get("maxItems" if array else "maxLength")
    if shortest is not None or longest is not None:
        if shortest is not None and shortest == longest:
            found["Length"] = ma_validate.Length(equal=shortest)
        else:
            found["Length"] = ma_validate.Length(min=shortest, max=longest)
    if isinstance(schema.get("pattern"), str):
        found["Regexp"] = ma_validate.Regexp(schema["pattern"])
    order = [k for k in schema.get("x-checks") or () if k in found]
    return [found[k] for k in order] + [v for k, v in found.items() if k not in order]


def field_from_schema(schema: Mapping[str, Any]) -> ma_fields.Field:
    """A marshmallow field from one portable field description."""
    kwargs: dict[str, Any] = {"required": bool(schema.get("x-required"))}
    metadata = dict(schema.get("x-metadata") or {})
    if isinstance(schema.get("description"), str):
        metadata["description"] = schema["description"]
    if metadata:
        kwargs["metadata"] = metadata
    if "x-default-made" in schema:  # made afresh for each request, as the plugin's callable did
        made = schema["x-default-made"]
        kwargs["load_default"] = lambda: copy.deepcopy(made)
    elif schema.get("x-has-default"):
        kwargs["load_default"] = schema.get("default")
        if schema.get("default") is None:
            kwargs["allow_none"] = True
    if schema.get("x-nullable"):
        kwargs["allow_none"] = True
    if isinstance(schema.get("x-data-key"), str):
        kwargs["data_key"] = schema["x-data-key"]
    validators = _validators(schema)
    if validators:
        kwargs["validate"] = validators
    kind = schema.get("type")
    if schema.get("x-file"):
        return File(**kwargs)
    if kind in SCALARS:
        return SCALARS[kind](**kwargs)
    if kind == "string":
        return STRINGS.get(schema.get("format"), ma_fields.String)(**kwargs)
    if kind == "array":
        items = schema.get("items")
        inner = field_from_schema(items) if isinstance(items, Mapping) else ma_fields.Raw()
        return ma_fields.List(inner, **kwargs)
    if kind == "object":
        properties = schema.get("properties")
        if isinstance(properties, Mapping) and properties:
            nested = marshmallow.Schema.from_dict(fields_from_description(properties))
            return ma_fields.Nested(nested, **kwargs)
        return ma_fields.Dict(**kwargs)
    return ma_fields.Raw(**kwargs)


def fields_from_description(described: Mapping[str, Mapping[str, Any]]) -> dict[str, ma_fields.Field]:
    """Every argument of a method, by name, from the plugin's description."""
    return {name: field_from_schema(schema) for name, schema in described.items()}


def response_schema_from_description(
    described: Mapping[str, Mapping[str, Any]] | None,
) -> type[marshmallow.Schema] | None:
    """The plugin's response schema (``schema``), if it declares one."""
    if described is None:
        return None
    return marshmallow.Schema.from_dict(fields_from_description(described), name="ModelPredictionResponse")


def unportable(described: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """The validators of each argument that JSON Schema cannot say (checked by the plugin's
    own worker, see :mod:`deepaas_like.engine.worker`)."""
    return {name: list(schema["x-unportable"]) for name, schema in described.items() if schema.get("x-unportable")}
