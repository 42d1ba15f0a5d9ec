"""A plugin described in a portable form: its arguments and response schema as JSON Schema,
its methods and metadata, written where the plugin runs and read where it is served.

A plugin in an environment of its own (its own webargs and marshmallow, e.g. webargs 5)
is never imported by the server. A process in its environment imports it and prints
:func:`describe_plugin`'s JSON; the server rebuilds the fields from it with its own
marshmallow (:mod:`deepaas_like.arguments.portable`), so validation, ``/swagger.json``,
the ``/ui/`` form and ``deepaas-cli``'s flags come out as for a plugin in the server's
environment.

Standard library only, and duck-typed on marshmallow's fields: this module runs under
whatever marshmallow (2, 3) the plugin's environment has. Every field becomes a JSON
Schema (``type``, ``format``, ``enum``, ranges, lengths, ``pattern``, ``items``,
``default``, ``description``) plus what JSON Schema has no word for (``x-required``,
``x-has-default``, ``x-default-made``, ``x-data-key``, ``x-file``, ``x-nullable``,
``x-metadata``); a validator that JSON Schema
cannot say (a function, ``NoneOf``...) is named under ``x-unportable``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Mapping

FORMAT_VERSION = 1
INTEGER = {"Integer", "Int"}
NUMBER = {"Float", "Number", "Decimal"}
BOOLEAN = {"Boolean", "Bool"}
STRING_FORMATS = {
    "String": None,
    "Str": None,
    "Url": "uri",
    "URL": "uri",
    "Email": "email",
    "UUID": "uuid",
    "DateTime": "date-time",
    "NaiveDateTime": "date-time",
    "AwareDateTime": "date-time",
    "Date": "date",
    "Time": "time",
}
ARRAYS = {"List", "Tuple"}
OBJECTS = {"Dict", "Mapping", "Nested"}
PLAIN = (str, int, float, bool, type(None))


def _class_names(obj: Any) -> list[str]:
    return [cls.__name__ for cls in type(obj).__mro__]


def _first(names: list[str], wanted: set[str] | Mapping[str, Any]) -> str | None:
    return next((n for n in names if n in wanted), None)


def _is_missing(value: Any) -> bool:
    """marshmallow's ``missing`` sentinel, in any version."""
    return type(value).__name__ == "_Missing" or repr(value) == "<marshmallow.missing>"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _default_of(field: Any) -> tuple[bool, Any, bool]:
    """Whether the field has a default when the argument is not given, what it is, and whether
    it is made by a callable (``load_default=list``: a fresh one each time, not documented)."""
    for attribute in ("load_default", "missing"):  # marshmallow 3.13+, then older
        if hasattr(field, attribute):
            value = getattr(field, attribute)
            if _is_missing(value):
                return False, None, False
            made = callable(value)
            if made:
                try:
                    value = value()
                except Exception:
                    return True, None, True
            return True, value if _jsonable(value) else str(value), made
    return False, None, False


def _metadata(field: Any) -> dict[str, Any]:
    """The field's metadata (marshmallow 3's ``metadata``, and marshmallow 2's extra keywords)."""
    found: dict[str, Any] = {}
    for source in (getattr(field, "metadata", None), getattr(field, "_metadata", None)):
        if isinstance(source, Mapping):
            found.update(source)
    return {key: value for key, value in found.items() if isinstance(key, str) and _jsonable(value)}


def _validators(field: Any, schema: dict[str, Any], unportable: list[str]) -> None:
    validators = list(getattr(field, "validators", None) or ())
    order: list[str] = []  # the order they run in, so that the errors come in the same order
    for validator in validators:
        names = _class_names(validator)
        kind = _first(names, {"OneOf", "Range", "Length", "Regexp"})
        if kind is not None:
            order.append(kind)
        if "OneOf" in names:
            choices = [c for c in getattr(validator, "choices", ()) if _jsonable(c)]
            schema["enum"] = choices
        elif "Range" in names:
            low, high = getattr(validator, "min", None), getattr(validator, "max", None)
            if low is not None:
                inclusive = getattr(validator, "min_inclusive", True)
                schema["minimum" if inclusive else "exclusiveMinimum"] = low
            if high is not None:
                inclusive = getattr(validator, "max_inclusive", True)
                schema["maximum" if inclusive else "exclusiveMaximum"] = high
        elif "Length" in names:
            array = schema.get("type") == "array"
            equal = getattr(validator, "equal", None)
            low = equal if equal is not None else getattr(validator, "min", None)
            high = equal if equal is not None else getattr(validator, "max", None)
            if low is not None:
                schema["minItems" if array else "minLength"] = low
            if high is not None:
                schema["maxItems" if array else "maxLength"] = high
        elif "Regexp" in names:
            regex = getattr(validator, "regex", None)
            pattern = getattr(regex, "pattern", regex)
            if isinstance(pattern, bytes):
                pattern = pattern.decode("utf-8", "replace")
            if isinstance(pattern, str):
                schema["pattern"] = pattern
        else:
            unportable.append(getattr(validator, "__name__", None) or type(validator).__name__)
    if len(order) > 1:
        schema["x-checks"] = order


def describe_field(field: Any) -> dict[str, Any]:
    """One marshmallow field (any version) as JSON Schema with our ``x-`` words."""
    names = _class_names(field)
    metadata = _metadata(field)
    schema: dict[str, Any] = {}
    unportable: list[str] = []
    declared_type = metadata.get("type")
    if "File" in names or declared_type == "file" or (declared_type == "string" and metadata.get("format") == "binary"):
        schema.update({"type": "string", "format": "binary", "x-file": True})
    elif _first(names, BOOLEAN):
        schema["type"] = "boolean"
    elif _first(names, INTEGER):
        schema["type"] = "integer"
    elif _first(names, NUMBER):
        schema["type"] = "number"
    elif (kind := _first(names, STRING_FORMATS)) is not None:
        schema["type"] = "string"
        if STRING_FORMATS[kind]:
            schema["format"] = STRING_FORMATS[kind]
    elif _first(names, ARRAYS):
        schema["type"] = "array"
        inner = getattr(field, "inner", None) or getattr(field, "container", None)
        if inner is None:
            inners = getattr(field, "tuple_fields", None)
            inner = inners[0] if inners else None
        if inner is not None:
            schema["items"] = describe_field(inner)
    elif _first(names, OBJECTS):
        schema["type"] = "object"
        nested = getattr(field, "nested", None)
        nested_fields = getattr(nested, "_declared_fields", None) or getattr(nested, "fields", None)
        if isinstance(nested_fields, Mapping):
            schema["properties"] = {str(k): describe_field(v) for k, v in nested_fields.items()}
    _validators(field, schema, unportable)
    if "enum" not in schema and isinstance(metadata.get("enum"), list):
        schema["enum"] = metadata["enum"]
    has_default, default, made = _default_of(field)
    if has_default and default is not None and not (isinstance(default, float) and not math.isfinite(default)):
        schema["x-default-made" if made else "default"] = default
    if isinstance(metadata.get("description"), str):
        schema["description"] = metadata["description"]
    schema["x-required"] = bool(getattr(field, "required", False))
    if has_default:
        schema["x-has-default"] = True
    if getattr(field, "allow_none", False):
        schema["x-nullable"] = True
    data_key = getattr(field, "data_key", None) or getattr(field, "load_from", None)
    if isinstance(data_key, str):
        schema["x-data-key"] = data_key
    kept = {k: v for k, v in metadata.items() if k not in ("description", "enum")}
    if kept:
        schema["x-metadata"] = kept
    if unportable:
        schema["x-unportable"] = unportable
    return schema


def declared_fields(declared: Any) -> Mapping[str, Any]:
    """The fields a plugin declares: a dict of fields, or a marshmallow Schema (class or instance)."""
    if declared is None:
        return {}
    if isinstance(declared, Mapping):
        return declared
    fields = getattr(declared, "_declared_fields", None)
    if fields is None and isinstance(declared, type):
        fields = getattr(declared(), "fields", None)
    if fields is None:
        fields = getattr(declared, "fields", None)
    if not isinstance(fields, Mapping):
        raise TypeError(f"arguments must be a dict of fields or a marshmallow Schema, not {type(declared).__name__}")
    return fields


def describe_fields(declared: Any) -> dict[str, dict[str, Any]]:
    return {str(name): describe_field(field) for name, field in declared_fields(declared).items()}


PLUGIN_METHODS = ("get_metadata", "warm", "predict", "predict_batch", "train")


def describe_plugin(obj: Any) -> dict[str, Any]:
    """What the server needs of a plugin it does not import: its methods, its arguments, its
    response schema and its metadata (or why get_metadata() failed)."""
    methods = [m for m in PLUGIN_METHODS if callable(getattr(obj, m, None))]
    described: dict[str, Any] = {"format": FORMAT_VERSION, "methods": methods}
    for key, method in (("predict_args", "get_predict_args"), ("train_args", "get_train_args")):
        getter = getattr(obj, method, None)
        try:
            described[key] = describe_fields(getter() if callable(getter) else {})
        except Exception as exc:
            raise RuntimeError(f"{method}() failed: {type(exc).__name__}: {exc}") from exc
    schema = getattr(obj, "schema", None)
    described["schema"] = describe_fields(schema) if schema is not None else None
    if "get_metadata" in methods:
        try:
            metadata = obj.get_metadata()
            described["metadata"] = json.loads(json.dumps(metadata, default=str))
        except Exception as exc:
            described["metadata_error"] = f"get_metadata() failed: {type(exc).__name__}: {exc}"
    described["python"] = sys.version.split()[0]
    return described


def own_checks(obj: Any) -> dict[str, dict[str, list[Any]]]:
    """The validators that JSON Schema cannot say, by method and argument: the plugin's worker
    runs them on each call's arguments (the server checked the rest)."""
    found: dict[str, dict[str, list[Any]]] = {}
    for method, getter in (("predict", "get_predict_args"), ("train", "get_train_args")):
        declared = getattr(obj, getter, None)
        if not callable(declared):
            continue
        for name, field in declared_fields(declared()).items():
            kept = [
                v
                for v in getattr(field, "validators", None) or ()
                if _first(_class_names(v), {"OneOf", "Range", "Length", "Regexp"}) is None
            ]
            if kept:
                found.setdefault(method, {})[str(name)] = kept
    return found


def check_arguments(checks: Mapping[str, list[Any]], kwargs: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the validators in ``checks`` say of the arguments (empty when all pass)."""
    errors: dict[str, list[str]] = {}
    for name, validators in checks.items():
        if kwargs.get(name) is None:
            continue
        for validator in validators:
            try:
                passed = validator(kwargs[name])
            except Exception as exc:  # marshmallow's ValidationError, of whichever marshmallow
                messages = getattr(exc, "messages", None) or [str(exc)]
                errors.setdefault(name, []).extend(
                    str(m) for m in (messages if isinstance(messages, list) else [messages])
                )
            else:
                if passed is False:
                    errors.setdefault(name, []).append("Invalid value.")
    return errors


def main() -> None:
    """``python -c 'from deepaas_like.portable import main; main()' NAME VALUE GROUP``: import the
    plugin the entry point names, in this interpreter, and print its description as JSON (or
    ``{"error": ..., "traceback": ...}`` and exit 1). What the plugin prints, natively too,
    goes to stderr: stdout holds the JSON alone."""
    import os
    import traceback

    from .loading import PluginRef

    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    name, value, group = sys.argv[1:4]
    try:
        answer = describe_plugin(PluginRef(name, value, group).load_object())
        status = 0
    except BaseException as exc:
        answer, status = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, 1
    sys.stdout.flush()
    json.dump(answer, out)
    out.close()
    sys.exit(status)
