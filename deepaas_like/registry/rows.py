"""The arguments of an uploaded model: its columns as fields, and ``{"rows": [...]}``."""

from __future__ import annotations

import math
from typing import Any

from webargs import fields, validate

from ..arguments import ArgumentSources, ArgumentSpec
from ..errors import ArgumentError
from ..frameworks import Column
from .host import ROWS

MAX_ROWS = 10000


def columns_from_schema(schema: dict[str, Any]) -> list[Column]:
    kinds = {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean"}
    columns = []
    for name, prop in schema["properties"].items():
        prop = prop if isinstance(prop, dict) else {}
        columns.append(
            Column(
                name,
                kinds.get(str(prop.get("type")), "number"),
                prop.get("minimum"),
                prop.get("maximum"),
                prop.get("enum"),
                prop.get("description"),
            )
        )
    return columns


def column_field(column: Column, required: bool) -> fields.Field:
    validators: list[validate.Validator] = []
    if column.minimum is not None or column.maximum is not None:
        validators.append(validate.Range(min=column.minimum, max=column.maximum))
    if column.choices:
        validators.append(validate.OneOf(column.choices))
    meta: dict[str, Any] = {"description": column.description} if column.description else {}
    if column.observed is not None:
        meta["x-observed-minimum"], meta["x-observed-maximum"] = column.observed
    kinds: dict[str, type[fields.Field]] = {"integer": fields.Int, "string": fields.Str, "boolean": fields.Bool}
    kind = kinds.get(column.type)
    if kind is None:
        return fields.Float(required=required, allow_nan=False, validate=validators, metadata=meta)
    return kind(required=required, validate=validators, metadata=meta)


def ranges(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each numeric column's smallest and largest value in ``rows``."""
    ranges: dict[str, list[float]] = {}
    for column in rows[0] if rows else ():
        values = [row.get(column) for row in rows]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if numbers and len(numbers) == len(values) and min(numbers) < max(numbers):
            ranges[column] = [min(numbers), max(numbers)]
    return ranges


class RowsArguments:
    """``{"rows": [...]}``: many rows in one request, each checked like a single row."""

    accept = None
    has_files = False

    def __init__(self, name: str, columns: list[Column] | None) -> None:
        self.model = name
        self.method = "predict"
        self.accepted = [ROWS]
        self._single = (
            ArgumentSpec(name, "predict", {c.name: column_field(c, True) for c in columns})
            if columns is not None
            else None
        )
        self._width = len(columns) if columns is not None else None

    @property
    def width(self) -> int | None:
        """How many values a row given as a list has (None: the model's own signature says)."""
        return self._width

    def load(self, sources: Any) -> dict[str, Any]:
        body = sources.json or {}
        unknown = sorted({*sources.query.keys(), *sources.form.keys(), *body.keys()} - {ROWS})
        if unknown or ROWS not in body:
            raise ArgumentError(
                'Send many rows as a JSON object {"rows": [...]} and nothing else'
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                {name: ["Unknown argument."] for name in unknown} or {ROWS: ["Missing data for required field."]},
                accepted=self.accepted,
            )
        rows = body[ROWS]
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ROWS:
            raise ArgumentError(f"rows must be a list of 1 to {MAX_ROWS} rows", {ROWS: ["Must be a non-empty list."]})
        errors: dict[str, Any] = {}
        checked = []
        for index, row in enumerate(rows):
            try:
                checked.append(self._row(row, sources.lenient))
            except ArgumentError as exc:
                errors[str(index)] = exc.errors
            except ValueError as exc:
                errors[str(index)] = [str(exc)]
        if errors:
            first = next(iter(errors.items()))
            raise ArgumentError(f"Invalid rows for {self.model} predict: row {first[0]}: {first[1]}", {ROWS: errors})
        return {ROWS: checked}

    def _row(self, row: Any, lenient: bool) -> Any:
        if isinstance(row, dict):
            if self._single is None:
                raise ValueError("this model's inputs have no names: send each row as a list of values")
            return self._single.load(ArgumentSources(json=row, lenient=lenient))
        if isinstance(row, list) or hasattr(row, "__array_interface__"):  # a numpy row: an inference tensor's
            if self._width is not None and len(row) != self._width:
                raise ValueError(f"has {len(row)} values; the model takes {self._width}")
            return row
        raise ValueError("each row is an object of inputs or a list of values")
