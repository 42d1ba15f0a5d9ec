"""Command-line flags from a model's own argument declarations (for ``deepaas-cli``).

A plugin installed here declares its arguments as marshmallow fields
(:func:`flags_from_spec`); a running server publishes the same declarations in its
OpenAPI document (:func:`flags_from_schema`). Both give the same :class:`ArgumentFlag`
list, so that ``deepaas-cli predict`` has the same flags in process and with ``--url``::

    flags = flags_from_spec(spec)           # or flags_from_schema(request_body_schema)
    add_flags(parser, flags)                 # --bins INT, --palette {mono,sunset,viridis}, ...
    values, files = collect(parser.parse_args(argv), flags)
    # values: {"bins": 3, "values": [1, 2]}   files: {"image": "cat.png"}

Values are converted only where the conversion is unambiguous (numbers, JSON for
object arguments); validation is left to the server's own rules
(:meth:`deepaas_like.arguments.ArgumentSpec.load`), so that a value the server refuses is
refused with the server's message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import marshmallow
from marshmallow import fields as ma_fields

from ..arguments import ArgumentSpec, field_choices, field_kind
from ..jsonutil import dumps

NO_DEFAULT: Any = marshmallow.missing
# How a flag's text becomes a value: the JSON Schema type of the argument (or of each
# item of a list argument), and "file" for uploads.
KINDS = ("string", "number", "integer", "boolean", "object", "file")
METAVARS = {"string": "TEXT", "number": "NUMBER", "integer": "INT", "boolean": "BOOL", "object": "JSON", "file": "PATH"}
_SPLIT_KINDS = ("number", "integer", "boolean")  # "1,2,3" is three items, as the server reads forms


@dataclass(frozen=True)
class ArgumentFlag:
    """One argument of ``predict`` or ``train`` as a command-line flag ``--<key>``."""

    key: str  # the argument's name in a request (a field's data_key)
    kind: str  # one of KINDS: of the value, or of each item when ``multiple``
    multiple: bool = False  # a list: the flag is repeated (--values 1 --values 2)
    required: bool = False
    default: Any = NO_DEFAULT
    choices: tuple[Any, ...] | None = None
    description: str = ""

    @property
    def option(self) -> str:
        return f"--{self.key}"

    @property
    def dest(self) -> str:
        """Where argparse keeps it: apart from the command's own options."""
        return f"model_argument:{self.key}"


# --- from declarations -------------------------------------------------------------


def flags_from_spec(spec: ArgumentSpec) -> list[ArgumentFlag]:
    """The flags of a plugin's declared arguments (``accept`` included)."""
    flags = []
    for name, f in spec.declared.items():
        if f is spec.accept:
            accept_choices = tuple(spec.accept_choices) if spec.accept_choices else None
            flags.append(
                ArgumentFlag(
                    "accept",
                    "string",
                    default=spec.default_accept or NO_DEFAULT,
                    choices=accept_choices,
                    description=_description(f) or "Response format",
                )
            )
            continue
        multiple = isinstance(f, (ma_fields.List, ma_fields.Tuple)) or bool(getattr(f, "is_multiple", False))
        item = f.inner if isinstance(f, ma_fields.List) else f
        choices = field_choices(f) or (field_choices(item) if item is not f else None)
        default = f.load_default
        flags.append(
            ArgumentFlag(
                key=f.data_key or name,
                kind=_field_kind(item),
                multiple=multiple,
                required=f.required,
                default="(computed)" if callable(default) else default,
                choices=tuple(choices) if choices else None,
                description=_description(f),
            )
        )
    return flags


def _field_kind(f: ma_fields.Field) -> str:
    kind = field_kind(f)
    return "string" if kind == "other" else kind


def _description(f: ma_fields.Field) -> str:
    text = f.metadata.get("description")
    return str(text) if text else ""


def flags_from_schema(schema: Mapping[str, Any] | None, accept_choices: Sequence[str] = ()) -> list[ArgumentFlag]:
    """The flags of a request body's JSON Schema, as the server's OpenAPI document has it.

    ``accept_choices`` are the content types the predict operation answers; with more
    than one, the model has an ``accept`` argument that picks one of them.
    """
    schema = schema or {}
    required = set(schema.get("required") or ())
    flags = []
    for key, prop in (schema.get("properties") or {}).items():
        multiple = prop.get("type") == "array"
        item = (prop.get("items") or {}) if multiple else prop
        item_type = item.get("type")
        if item.get("format") == "binary":
            kind = "file"
        elif item_type == "array":  # a list of lists: each item as JSON
            kind = "object"
        else:
            kind = item_type if item_type in KINDS else "string"
        choices = prop.get("enum") or item.get("enum")
        flags.append(
            ArgumentFlag(
                key=key,
                kind=kind,
                multiple=multiple,
                required=key in required,
                default=prop.get("default", NO_DEFAULT),
                choices=tuple(choices) if choices else None,
                description=str(prop.get("description") or item.get("description") or ""),
            )
        )
    if len(accept_choices) > 1 and "accept" not in {f.key for f in flags}:
        flags.append(
            ArgumentFlag(
                "accept",
                "string",
                choices=tuple(accept_choices),
                description="Response format (default: the model's own)",
            )
        )
    return flags


# --- argparse ------------------------------------------------------------------------


def add_flags(parser: argparse._ActionsContainer, flags: Sequence[ArgumentFlag]) -> None:
    """Add one option per flag to ``parser`` or to an argument group of one (both are argparse's
    ``_ActionsContainer``): typed, choices, required, repeatable, --x/--no-x for booleans."""
    for flag in flags:
        options: dict[str, Any] = {
            "dest": flag.dest,
            "default": None,
            "help": help_text(flag),
            "required": flag.required,
        }
        if flag.kind == "boolean" and not flag.multiple:
            options["action"] = argparse.BooleanOptionalAction
        else:
            if flag.multiple:
                options["action"] = "append"
            if flag.kind == "file":
                options["type"] = existing_file
            if flag.choices and flag.kind != "file":
                options["choices"] = [_text(c) for c in flag.choices]
            else:
                options["metavar"] = METAVARS[flag.kind]
        parser.add_argument(flag.option, **options)


def help_text(flag: ArgumentFlag) -> str:
    """The declared description, then how to give it and its default."""
    notes = []
    if flag.kind == "file":
        notes.append("a file's path")
    elif flag.kind == "object":
        notes.append("JSON")
    if flag.multiple:
        notes.append("repeatable")
    if flag.required:
        notes.append("required")
    elif flag.default is not NO_DEFAULT:
        notes.append(f"default: {_text(flag.default)}")
    text = flag.description.strip()
    if notes:
        text = f"{text} ({'; '.join(notes)})" if text else "; ".join(notes).capitalize()
    return text.replace("%", "%%")  # argparse formats help with %


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return dumps(value)
    except TypeError:
        return repr(value)


def existing_file(path: str) -> str:
    """An argparse type: the path of a readable file."""
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {path}")
    return path


# --- parsed flags to values ---------------------------------------------------------------


def collect(namespace: argparse.Namespace, flags: Sequence[ArgumentFlag]) -> tuple[dict[str, Any], dict[str, str]]:
    """The arguments given on the command line: ``(values, files)``; files by path."""
    values: dict[str, Any] = {}
    files: dict[str, str] = {}
    for flag in flags:
        raw = getattr(namespace, flag.dest, None)
        if raw is None:
            continue
        if flag.kind == "file":
            files[flag.key] = raw[-1] if isinstance(raw, list) else raw
        elif flag.multiple:
            items = [part.strip() for item in raw for part in item.split(",")] if flag.kind in _SPLIT_KINDS else raw
            values[flag.key] = [typed(flag.kind, item) for item in items]
        else:
            values[flag.key] = typed(flag.kind, raw)
    return values, files


def typed(kind: str, text: Any) -> Any:
    """A flag's text as a JSON value where that is unambiguous; else the text itself,
    which the server's validation then accepts or refuses in its own words.

    >>> typed("integer", "3"), typed("number", "2.5"), typed("number", "nan"), typed("object", '{"a": 1}')
    (3, 2.5, 'nan', {'a': 1})
    """
    if not isinstance(text, str):
        return text
    if kind in ("number", "integer"):
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if kind == "object":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
