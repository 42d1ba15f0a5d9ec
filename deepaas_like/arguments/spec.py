"""The arguments of one method of a model (:class:`ArgumentSpec`) and the places one
request carries them in (:class:`ArgumentSources`): unknown ones refused, each checked by
its field, every mistake of a request said at once (422)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import marshmallow
from marshmallow import fields as ma_fields
from marshmallow import validate as ma_validate
from multidict import MultiDict, MultiDictProxy

from ..errors import ArgumentError
from ..files import UploadedFile
from ..legacy import legacy_vocabulary_allowed
from .fields import (
    field_choices,
    has_default,
    integer_field,
    is_file_field,
    is_multiple,
    is_plain,
    json_type,
    most_items,
)
from .values import UNDECIDED, integral, is_empty_part, quick_conversion, split_delimited

JSON = "application/json"
NOT_AN_INTEGER = "Not a valid integer."
_REQUIRED = object()  # the "default" of a required field in ArgumentSpec._direct
_ABSENT = object()
# A field :meth:`ArgumentSpec.load` reads in one pass: key, attribute, conversion, default, validate.
_DirectField = tuple[str, str, Callable[[Any], Any], Any, Any]

NOTHING: Mapping[str, Any] = MultiDictProxy(MultiDict())  # a source that carries no argument (read-only)


class ArgumentSources:
    """The places one request carries arguments in, already read from the body.

    ``negotiated_accept`` is the ``accept`` choice the request's ``Accept`` header
    picked (the API layer negotiates it); an explicit ``accept`` argument wins over it.
    A plain class: one is made for every request, and empty sources share one
    read-only mapping.
    """

    __slots__ = ("query", "form", "files", "json", "negotiated_accept", "lenient")

    def __init__(
        self,
        query: Mapping[str, str] = NOTHING,
        form: Mapping[str, str] = NOTHING,
        files: Mapping[str, UploadedFile] = NOTHING,
        json: Mapping[str, Any] | None = None,
        negotiated_accept: str | None = None,
        lenient: bool = False,
    ) -> None:
        self.query = query
        self.form = form
        self.files = files
        self.json = json
        self.negotiated_accept = negotiated_accept
        # JSON values are taken as the document types them (true/false for a boolean, a
        # number for a number), unless they were read from text (a command line, a CSV file,
        # a tensor of strings): then "1" is a number and 0 a boolean, as in a form.
        self.lenient = lenient


class ArgumentSpec:
    """The validated arguments of one method (``predict`` or ``train``) of a model."""

    def __init__(self, model: str, method: str, declared: Mapping[str, Any]) -> None:
        if not isinstance(declared, Mapping):
            raise TypeError(
                f"get_{method}_args() must return a dict of webargs/marshmallow fields, not {type(declared).__name__}"
            )
        for name, value in declared.items():
            if not isinstance(value, ma_fields.Field):
                raise TypeError(
                    f"get_{method}_args()['{name}'] must be a webargs/marshmallow field, not {type(value).__name__}"
                )
        self.model = model
        self.method = method
        self.declared: dict[str, ma_fields.Field] = dict(declared)
        self.accept: ma_fields.Field | None = self.declared.get("accept") if method == "predict" else None
        self.body_fields = {k: v for k, v in self.declared.items() if v is not self.accept}
        self._by_key = {(f.data_key or name): f for name, f in self.body_fields.items()}
        self.file_keys = {key for key, f in self._by_key.items() if is_file_field(f)}
        self._multiple = {key for key, f in self._by_key.items() if is_multiple(f)}
        # The most form parts these arguments take when every list is as long as it may be
        # (lists without a declared bound count one: --max-form-parts bounds them).
        self.declared_parts = sum(most_items(f) if key in self._multiple else 1 for key, f in self._by_key.items())
        self._integers = {key for key, f in self._by_key.items() if integer_field(f) is not None}
        self._json_types = {key: kind for key, f in self._by_key.items() if (kind := json_type(f)) is not None}
        self._optional_files = {key for key in self.file_keys if not self._by_key[key].required}
        self._known = {*self._by_key, *(["accept"] if self.accept is not None else [])}
        self.accepted = sorted(self._known)
        self._enum_fields = [
            (name, f)
            for name, f in self.body_fields.items()
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
            (f.data_key if f.data_key is not None else name, f.attribute or name, f, is_plain(f), quick_conversion(f))
            for name, f in bound.items()
        ]
        self.accept_choices = field_choices(self.accept) if self.accept is not None else None
        self.default_accept = self._default_accept()
        self._accept_attribute = _attribute_name(self.declared, self.accept) if self.accept is not None else None
        self._direct = self._direct_fields()

    def _direct_fields(self) -> list[_DirectField] | None:
        """For a declaration of plain values only (text and numbers: no files, lists or
        legacy ``enum``), each field as ``(key, attribute, conversion, default, validate)``;
        :meth:`load` then reads an ordinary request in one pass. ``None`` otherwise."""
        if self.file_keys or self._multiple or self._enum_fields:
            return None
        direct = []
        for key, attribute, f, plain, quick in self._fields:
            if not plain or quick is None:
                return None
            default = _REQUIRED if f.required else f.load_default
            direct.append((key, attribute, quick, default, f._validate if f.validators else None))
        return direct

    @property
    def has_files(self) -> bool:
        return bool(self.file_keys)

    def _default_accept(self) -> str | None:
        if self.accept is None:
            return None
        if has_default(self.accept) and not callable(self.accept.load_default):
            return self.accept.load_default
        if self.accept_choices:
            return self.accept_choices[0]
        return JSON

    # --- validation -----------------------------------------------------------

    def load(self, sources: ArgumentSources) -> dict[str, Any]:
        """Validate the request's arguments; return the plugin's keyword arguments."""
        mistyped = (
            self._json_type_errors(sources.json) if sources.json and self._json_types and not sources.lenient else {}
        )
        if self._direct is not None and not sources.files and not mistyped:
            direct = self._load_direct(sources)
            if direct is not None:
                return direct
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
        errors: dict[str, Any] = dict(mistyped)  # said with every other mistake of the request
        data: dict[str, Any] = {}
        for key in present:
            if key == "accept" and self.accept is not None:
                continue
            if key in self.file_keys:
                if key in sources.files:
                    data[key] = self._value(sources.files, key)
                elif not is_empty_part(sources.form, key):
                    errors[key] = ["Must be a file upload (send the request as multipart/form-data)."]
                elif key not in self._optional_files:
                    errors[key] = ["Missing data for required field."]
            elif key in sources.files:
                errors[key] = ["Must be a plain value, not a file upload."]
            elif key in sources.query:
                data[key] = self._value(sources.query, key)
            elif key in sources.form:
                data[key] = self._value(sources.form, key)
            else:
                data[key] = body[key]
        for key in (self._integers & data.keys()) - errors.keys():
            try:
                data[key] = integral(data[key])
            except ValueError:
                errors[key] = [NOT_AN_INTEGER]
        result: dict[str, Any] = {}
        missing = marshmallow.missing
        for key, attribute, f, plain, quick in self._fields:
            if key in errors:
                continue
            raw = data.get(key, missing)
            try:
                if not plain:
                    value = f.deserialize(raw, key, data)
                elif raw is missing and not f.required:  # Field.deserialize's own steps, inlined
                    value = f.load_default() if callable(f.load_default) else f.load_default
                elif raw is None or raw is missing:
                    value = f.deserialize(raw, key, data)
                else:
                    value = quick(raw) if quick is not None else UNDECIDED
                    if value is UNDECIDED:
                        value = f._deserialize(raw, key, data)
                    if f.validators:  # with none, marshmallow's _validate() only builds an empty And
                        f._validate(value)
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

    def _json_type_errors(self, body: Mapping[str, Any]) -> dict[str, list[str]]:
        """Where a JSON body has no JSON boolean or number where one is declared (``0`` for
        false, ``"5"`` for 5): what to say for each such argument."""
        errors = {}
        for key, kind in self._json_types.items():
            value = body.get(key)
            if value is None:
                continue
            if kind is bool and not isinstance(value, bool):
                errors[key] = ["Not a valid boolean: JSON true or false."]
            elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                errors[key] = ["Not a valid number: a JSON number, not text."]
        return errors

    def _load_direct(self, sources: ArgumentSources) -> dict[str, Any] | None:
        """The keyword arguments of a request whose arguments all come from one place, each
        given once and simply accepted (what :meth:`load` would return for it); ``None``
        for anything else (a missing, unknown, repeated or refused argument, a value that
        needs marshmallow's judgement), which :meth:`load` then checks and words."""
        fields = self._direct
        if fields is None:  # a declaration that is never read in one pass
            return None
        values: Mapping[str, Any] = sources.query
        for other in (sources.form, sources.json):
            if other:
                if values:
                    return None
                values = other
        result: dict[str, Any] = {}
        found = 0
        for key, attribute, quick, default, validate in fields:
            raw = values.get(key, _ABSENT)
            if raw is _ABSENT:
                if default is _REQUIRED:
                    return None
                if default is not marshmallow.missing:
                    result[attribute] = default() if callable(default) else default
                continue
            found += 1
            value = quick(raw)
            if value is UNDECIDED:
                return None
            if validate is not None:
                try:
                    validate(value)
                except marshmallow.ValidationError:
                    return None
            result[attribute] = value
        if found != len(values):  # an unknown, repeated or explicit ``accept`` argument
            return None
        if self._accept_attribute is not None:
            result[self._accept_attribute] = sources.negotiated_accept or self.default_accept
        return result

    def _value(self, source: Any, key: str) -> Any:
        """One value, or every value for a list argument (``a=1&a=2``)."""
        if key not in self._multiple:
            return source[key] if not hasattr(source, "getone") else source.getone(key)
        values = source.getall(key) if hasattr(source, "getall") else source[key]
        return split_delimited(self._by_key[key], list(values) if isinstance(values, (list, tuple)) else [values])

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
        return sources.negotiated_accept or self.default_accept


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
