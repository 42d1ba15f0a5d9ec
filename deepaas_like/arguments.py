"""Arguments of a model's predict/train: declaration, request sources, validation.

A plugin declares its arguments as a dict of webargs/marshmallow fields. One request
may carry them in the query string, an urlencoded or multipart form (files only
there) and a JSON object body; for each argument the first place that has it wins,
in that order (DEEPaaS 2.x behaves the same way). Unknown arguments are refused
with 422 so that a typo never passes silently.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import marshmallow
from marshmallow import fields as ma_fields
from marshmallow import validate as ma_validate
from marshmallow.warnings import ChangedInMarshmallow4Warning, RemovedInMarshmallow4Warning
from multidict import MultiDict

from .errors import ArgumentError
from .files import UploadedFile

JSON = "application/json"


@contextlib.contextmanager
def legacy_vocabulary_allowed() -> Iterator[None]:
    """Silence the deprecation warnings that DEEPaaS-era plugins trigger by design.

    ``missing=``, ``description=``, ``fields.Field(...)`` and importing
    ``pkg_resources`` all warn under marshmallow 3.26 / setuptools; they are the
    vocabulary we promise to accept, so they are not the operator's problem.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RemovedInMarshmallow4Warning)
        warnings.simplefilter("ignore", ChangedInMarshmallow4Warning)
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*pkg_resources.*", category=DeprecationWarning)
        yield


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


def field_choices(f: ma_fields.Field) -> list[Any] | None:
    """The allowed values of a field: a OneOf validator, else an ``enum`` in metadata."""
    for validator in f.validators:
        if isinstance(validator, ma_validate.OneOf):
            return list(validator.choices)
    enum = f.metadata.get("enum")
    if isinstance(enum, (list, tuple)) and enum:
        return list(enum)
    return None


def _has_default(f: ma_fields.Field) -> bool:
    return f.load_default is not marshmallow.missing


@dataclass
class ArgumentSources:
    """The places one request carries arguments in, already read from the body."""

    query: Mapping[str, str] = field(default_factory=MultiDict)
    form: Mapping[str, str] = field(default_factory=MultiDict)
    files: Mapping[str, UploadedFile] = field(default_factory=MultiDict)
    json: Mapping[str, Any] | None = None
    accept_header: str | None = None


class ArgumentSpec:
    """The validated arguments of one method (``predict`` or ``train``) of a model."""

    def __init__(self, model: str, method: str, declared: Mapping[str, Any]) -> None:
        if not isinstance(declared, Mapping):
            raise TypeError(
                f"get_{method}_args() must return a dict of webargs/marshmallow fields, "
                f"not {type(declared).__name__}"
            )
        for name, value in declared.items():
            if not isinstance(value, ma_fields.Field):
                raise TypeError(
                    f"get_{method}_args()['{name}'] must be a webargs/marshmallow field, "
                    f"not {type(value).__name__}"
                )
        self.model = model
        self.method = method
        self.declared: dict[str, ma_fields.Field] = dict(declared)
        self.accept: ma_fields.Field | None = self.declared.get("accept") if method == "predict" else None
        self.body_fields = {k: v for k, v in self.declared.items() if v is not self.accept}
        self._by_key = {(f.data_key or name): f for name, f in self.body_fields.items()}
        self.file_keys = {key for key, f in self._by_key.items() if is_file_field(f)}
        self._multiple = {key for key, f in self._by_key.items() if _is_multiple(f)}
        self._known = {*self._by_key, *(["accept"] if self.accept is not None else [])}
        self.accepted = sorted(self._known)
        self._enum_fields = [
            (name, f) for name, f in self.body_fields.items()
            if isinstance(f.metadata.get("enum"), (list, tuple))
            and not any(isinstance(v, ma_validate.OneOf) for v in f.validators)
        ]
        with legacy_vocabulary_allowed():
            self.schema_class = marshmallow.Schema.from_dict(
                self.body_fields, name=f"{_camel(model)}{method.capitalize()}Args"
            )
            bound = self.schema_class().load_fields  # the fields bound to a schema instance
        # Each field's own deserialize(): what Schema.load does for a dict of fields,
        # without its hook and error-store machinery on every request.
        self._fields = [
            (f.data_key if f.data_key is not None else name, f.attribute or name, f)
            for name, f in bound.items()
        ]
        self.accept_choices = field_choices(self.accept) if self.accept is not None else None
        self.default_accept = self._default_accept()

    @property
    def has_files(self) -> bool:
        return bool(self.file_keys)

    def _default_accept(self) -> str | None:
        if self.accept is None:
            return None
        if _has_default(self.accept) and not callable(self.accept.load_default):
            return self.accept.load_default
        if self.accept_choices:
            return self.accept_choices[0]
        return JSON

    # --- validation -----------------------------------------------------------

    def load(self, sources: ArgumentSources) -> dict[str, Any]:
        """Validate the request's arguments; return the plugin's keyword arguments."""
        body = sources.json or {}
        present = {*sources.query.keys(), *sources.form.keys(), *sources.files.keys(), *body.keys()}
        unknown = sorted(present - self._known)
        if unknown:
            raise ArgumentError(
                f"Unknown argument{'s' if len(unknown) > 1 else ''} for {self.model} {self.method}: "
                f"{', '.join(unknown)}. Accepted arguments: {', '.join(self.accepted) or '(none)'}",
                {name: ["Unknown argument."] for name in unknown},
                accepted=self.accepted,
            )
        errors: dict[str, Any] = {}
        data: dict[str, Any] = {}
        for key in present:
            if key == "accept" and self.accept is not None:
                continue
            if key in self.file_keys:
                if key in sources.files:
                    data[key] = self._value(sources.files, key)
                else:
                    errors[key] = ["Must be a file upload (send the request as multipart/form-data)."]
            elif key in sources.files:
                errors[key] = ["Must be a plain value, not a file upload."]
            elif key in sources.query:
                data[key] = self._value(sources.query, key)
            elif key in sources.form:
                data[key] = self._value(sources.form, key)
            else:
                data[key] = body[key]
        result: dict[str, Any] = {}
        for key, attribute, f in self._fields:
            try:
                value = f.deserialize(data.get(key, marshmallow.missing), key, data)
            except marshmallow.ValidationError as exc:
                errors[key] = _string_keys(exc.messages)
                continue
            if value is not marshmallow.missing:
                result[attribute] = value
        if self._enum_fields:
            errors.update(self._enum_errors(result))
        accept = self._resolve_accept(sources, errors) if self.accept is not None else None
        if errors:
            raise ArgumentError(
                f"Invalid arguments for {self.model} {self.method}: {_summary(errors)}",
                errors,
                accepted=self.accepted,
            )
        if self.accept is not None:
            result[_attribute_name(self.declared, self.accept)] = accept
        return result

    def _value(self, source: Any, key: str) -> Any:
        """One value, or every value for a list argument (``a=1&a=2``)."""
        if key not in self._multiple:
            return source[key] if not hasattr(source, "getone") else source.getone(key)
        values = source.getall(key) if hasattr(source, "getall") else source[key]
        return _split_delimited(self._by_key[key], list(values) if isinstance(values, (list, tuple)) else [values])

    def _enum_errors(self, result: Mapping[str, Any]) -> dict[str, list[str]]:
        """``enum=[...]`` in legacy metadata only documented choices; we enforce them."""
        errors = {}
        for name, f in self._enum_fields:
            attribute = f.attribute or name
            if attribute not in result:
                continue
            enum = f.metadata["enum"]
            values = result[attribute] if isinstance(result[attribute], list) else [result[attribute]]
            if any(v not in enum for v in values):
                errors[f.data_key or name] = [f"Must be one of: {', '.join(map(str, enum))}."]
        return errors

    def _resolve_accept(self, sources: ArgumentSources, errors: dict[str, Any]) -> str | None:
        if self.accept is None:
            return None
        explicit = _first(sources.query, "accept") or _first(sources.form, "accept")
        if explicit is None and sources.json and "accept" in sources.json:
            explicit = sources.json["accept"]
        if explicit is not None:
            try:
                return self.accept.deserialize(explicit)
            except marshmallow.ValidationError as exc:
                errors["accept"] = exc.messages
                return None
        if sources.accept_header:
            chosen = negotiate(sources.accept_header, self.accept_choices or [], self.default_accept)
            if chosen is not None:
                return chosen
        return self.default_accept


def negotiate(header: str, choices: Sequence[str], default: str | None) -> str | None:
    """Pick the choice an ``Accept`` header prefers; ``default`` for ``*/*``.

    Browsers and tools send ranges the plugin never declared (``text/html,...``);
    those simply fall back to the default rather than failing the request.
    """
    ranges = []
    for position, item in enumerate(header.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media and q > 0:
            ranges.append((-q, position, media))
    lowered = {c.lower(): c for c in choices if isinstance(c, str)}
    for _, _, media in sorted(ranges):
        if media == "*/*":
            return default
        if media in lowered:
            return lowered[media]
        major, _, minor = media.partition("/")
        for low, original in lowered.items():
            c_major, _, c_minor = low.partition("/")
            if c_major == major and (minor == "*" or c_minor == "*"):
                return original
    return None


# --- helpers -----------------------------------------------------------------

_UNAMBIGUOUS_ITEMS = (ma_fields.Number, ma_fields.Boolean)


def _is_multiple(f: ma_fields.Field) -> bool:
    """Arguments that take every value of a repeated key, as webargs decides it."""
    return bool(getattr(f, "is_multiple", False)) or isinstance(f, (ma_fields.List, ma_fields.Tuple))


def _split_delimited(f: ma_fields.Field, value: Any) -> Any:
    """``values=1,2,3`` (one form item, as Swagger UI sends arrays) for a list of numbers
    or booleans means three items; lists of strings are left alone (commas are data)."""
    if not isinstance(f, ma_fields.List) or not isinstance(f.inner, _UNAMBIGUOUS_ITEMS):
        return value
    if not any(isinstance(v, str) and "," in v for v in value):
        return value
    return [part.strip() for v in value for part in (v.split(",") if isinstance(v, str) else [v])]



def _first(mapping: Mapping[str, Any], key: str) -> Any:
    return mapping.get(key) if key in mapping else None


def _attribute_name(declared: Mapping[str, ma_fields.Field], target: ma_fields.Field) -> str:
    for name, f in declared.items():
        if f is target:
            return f.attribute or name
    raise KeyError("field not declared")


def _string_keys(messages: Any) -> Any:
    if isinstance(messages, dict):
        return {str(k): _string_keys(v) for k, v in messages.items()}
    if isinstance(messages, list):
        return [_string_keys(m) for m in messages]
    return messages


def _summary(errors: Mapping[str, Any]) -> str:
    parts = []
    for key, value in errors.items():
        text = _first_message(value)
        parts.append(f"{key}: {text}" if text else key)
    return "; ".join(parts)


def _first_message(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_first_message(v) for v in value[:2])
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_first_message(v)}" for k, v in list(value.items())[:2])
    return str(value)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").replace(".", "_").split("_"))


def describe_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly copy of validated arguments (files shown by their metadata)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = _describe(value)
    return out


def _describe(value: Any) -> Any:
    if isinstance(value, UploadedFile):
        return {
            "name": value.name,
            "content_type": value.content_type,
            "original_filename": value.original_filename,
        }
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    return value
