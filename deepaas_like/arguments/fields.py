"""What a declared argument is: the :class:`File` field, and what a webargs/marshmallow
field takes (its kind, choices, a default, many values or one, integers, JSON types)."""

from __future__ import annotations

from typing import Any

import marshmallow
from marshmallow import fields as ma_fields
from marshmallow import validate as ma_validate

from ..files import UploadedFile


class File(ma_fields.Raw):
    """A file upload argument; the plugin receives an :class:`UploadedFile`.

    ``File(required=True, metadata={"description": "An image"})`` is the current
    spelling of DEEPaaS's ``fields.Field(type="file", location="form")``.
    """

    def __init__(self, **kwargs: Any) -> None:
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata.setdefault("type", "file")
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, UploadedFile):
            raise marshmallow.ValidationError("Must be a file upload (multipart/form-data).")
        return value


def is_file_field(f: ma_fields.Field) -> bool:
    """True for fields declared as a file upload, in any vocabulary."""
    if isinstance(f, File):
        return True
    meta = f.metadata
    return meta.get("type") == "file" or (meta.get("type") == "string" and meta.get("format") == "binary")


def field_kind(f: ma_fields.Field) -> str:
    """What a field takes, in the words the CLI and the tensor protocol build on: ``file``,
    ``boolean``, ``integer``, ``number``, ``object``, ``string`` or ``other`` (lists, dates, ...)."""
    if is_file_field(f):
        return "file"
    for kind, types in (
        ("boolean", ma_fields.Boolean),
        ("integer", ma_fields.Integer),
        ("number", ma_fields.Number),
        ("object", (ma_fields.Mapping, ma_fields.Nested)),
        ("string", ma_fields.String),
    ):
        if isinstance(f, types):
            return kind
    return "other"


def field_choices(f: ma_fields.Field) -> list[Any] | None:
    """The allowed values of a field: a OneOf validator, else an ``enum`` in metadata."""
    for validator in f.validators:
        if isinstance(validator, ma_validate.OneOf):
            return list(validator.choices)
    enum = f.metadata.get("enum")
    if isinstance(enum, (list, tuple)) and enum:
        return list(enum)
    return None


def has_default(f: ma_fields.Field) -> bool:
    """``f`` declares a default (``load_default``)."""
    return f.load_default is not marshmallow.missing


def is_plain(f: ma_fields.Field) -> bool:
    """``f`` uses marshmallow's own ``Field.deserialize`` and ``_validate`` (``ArgumentSpec.load`` inlines them)."""
    return type(f).deserialize is ma_fields.Field.deserialize and type(f)._validate is ma_fields.Field._validate


def json_type(f: ma_fields.Field) -> type | None:
    """``bool`` or ``float`` for a field that takes one JSON boolean or number, else None."""
    if isinstance(f, ma_fields.Boolean):
        return bool
    if isinstance(f, ma_fields.Number):
        return float
    return None


def integer_field(f: ma_fields.Field) -> ma_fields.Integer | None:
    """The Integer field that ``f`` is, or holds the items of (a list of integers)."""
    if isinstance(f, ma_fields.Integer):
        return f
    if isinstance(f, ma_fields.List) and isinstance(f.inner, ma_fields.Integer):
        return f.inner
    return None


def most_items(f: ma_fields.Field) -> int:
    """The largest number of items a list argument declares (validate.Length(max=...)), else 1."""
    bounds = [v.max for v in f.validators if isinstance(v, ma_validate.Length) and v.max is not None]
    return max(1, min(bounds)) if bounds else 1


def is_multiple(f: ma_fields.Field) -> bool:
    """Arguments that take every value of a repeated key, as webargs decides it."""
    return bool(getattr(f, "is_multiple", False)) or isinstance(f, (ma_fields.List, ma_fields.Tuple))
