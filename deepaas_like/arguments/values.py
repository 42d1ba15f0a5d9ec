"""What a request sent, as the values its fields take: a quick conversion where a plain
field simply accepts it, integral numbers for integer fields (``2.0`` is 2, ``2.7`` is
refused), ``1,2,3`` as three items of a list of numbers, an empty form part."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from marshmallow import fields as ma_fields

_UNAMBIGUOUS_ITEMS = (ma_fields.Number, ma_fields.Boolean)
UNDECIDED = object()  # a quick conversion's answer when marshmallow must decide (and word the error)


def quick_conversion(f: ma_fields.Field) -> Callable[[Any], Any] | None:
    """For a field of exactly marshmallow's Float, Integer (not strict) or String: the
    value its ``_deserialize`` gives for an input it simply accepts, in one call instead
    of four; :data:`UNDECIDED` for any other input, which marshmallow then takes."""
    if type(f) is ma_fields.Float:
        allow_nan = f.allow_nan is not False

        def to_float(raw: Any) -> Any:
            if type(raw) is str or type(raw) is float or type(raw) is int:  # not bool: marshmallow refuses it
                try:
                    value = float(raw)
                except (ValueError, OverflowError):
                    return UNDECIDED
                if allow_nan or math.isfinite(value):
                    return value
            return UNDECIDED

        return to_float
    if type(f) is ma_fields.Integer and not f.strict:

        def to_int(raw: Any) -> Any:
            if type(raw) is int or type(raw) is str:
                try:
                    return int(raw)
                except ValueError:
                    return UNDECIDED
            return UNDECIDED

        return to_int
    if type(f) is ma_fields.String:
        return lambda raw: raw if type(raw) is str else UNDECIDED
    return None


def integral(value: Any) -> Any:
    """``value`` with integral numbers as ``int`` (``2.0`` and ``"2.0"`` become ``2``).

    Raises ValueError for a number (or numeric text) with a fractional part, or one that
    is not finite. What is not a number at all is returned as it is, for the field to
    refuse in its own words.
    """
    if isinstance(value, list):
        return [integral(v) for v in value]
    number = value
    if isinstance(value, str):
        try:
            int(value)
            return value
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return value
    if isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(value)
        return int(number)
    return value


def is_empty_part(form: Mapping[str, Any], key: str) -> bool:
    """A form field sent empty (a file input left empty in a browser form)."""
    if key not in form:
        return False
    values = form.getall(key) if hasattr(form, "getall") else [form[key]]
    return all(v == "" for v in values)


def split_delimited(f: ma_fields.Field, value: Any) -> Any:
    """``values=1,2,3`` (one form item, as Swagger UI sends arrays) for a list of numbers
    or booleans means three items; lists of strings are left alone (commas are data)."""
    if not isinstance(f, ma_fields.List) or not isinstance(f.inner, _UNAMBIGUOUS_ITEMS):
        return value
    if not any(isinstance(v, str) and "," in v for v in value):
        return value
    return [part.strip() for v in value for part in (v.split(",") if isinstance(v, str) else [v])]
