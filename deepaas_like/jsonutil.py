"""JSON encoding that accepts what models typically return (numpy values, dates)."""

from __future__ import annotations

import datetime
import decimal
import json
import pathlib
import uuid
from typing import Any


def json_default(value: Any) -> Any:
    """``default=`` hook for :func:`json.dumps`: numpy, dates, decimals, sets, paths."""
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        return tolist()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (pathlib.PurePath, uuid.UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, ensure_ascii=False)


def to_jsonable(value: Any) -> Any:
    """``value`` converted to plain JSON types (raises TypeError if impossible)."""
    return json.loads(dumps(value))
