"""Sample rows for model tests and feature impact: from JSON or a CSV file, checked to be tabular.

A row is a JSON object of named scalar values (numbers, strings, booleans, null): what a
tabular model takes, one value per feature::

    rows = rows_from_csv(b"sepal_length,petal_length\\n5.1,1.4\\n6.9,5.4\\n")
    # [{"sepal_length": 5.1, "petal_length": 1.4}, {"sepal_length": 6.9, "petal_length": 5.4}]
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ..errors import ArgumentError

MAX_ROWS = 10000
Row = dict[str, Any]


def _scalar(text: str) -> Any:
    """A CSV cell as JSON would have it: number, boolean, null (empty), else the text."""
    stripped = text.strip()
    if stripped == "":
        return None
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        return text


def rows_from_csv(data: bytes) -> list[Row]:
    """The rows of a CSV file with a header line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ArgumentError(f"The CSV file is not UTF-8: {exc}", {"data": ["Not UTF-8 text."]}) from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ArgumentError("The CSV file has no header line naming the features", {"data": ["No header."]})
    rows = []
    for number, record in enumerate(reader, start=2):
        if None in record or any(value is None for value in record.values()):
            raise ArgumentError(
                f"CSV line {number} does not have one value per column",
                {"data": [f"Line {number}: wrong number of values."]},
            )
        rows.append({key: _scalar(value) for key, value in record.items()})
    return checked_rows(rows)


def checked_rows(rows: Any, name: str = "rows") -> list[Row]:
    """1 to MAX_ROWS rows, each an object of scalar values (a 422 that says which is not)."""
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ROWS:
        raise ArgumentError(f"{name} must be a list of 1 to {MAX_ROWS} rows", {name: ["Must be a non-empty list."]})
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not row:
            raise ArgumentError(
                f"{name}[{index}] must be an object of feature values", {name: [f"Row {index}: not an object."]}
            )
        for key, value in row.items():
            if not isinstance(value, (int, float, str, bool)) and value is not None:
                raise ArgumentError(
                    f"{name}[{index}].{key} is not a scalar: the inputs must be tabular "
                    "(one number, string or boolean per feature)",
                    {name: [f"Row {index}, {key}: not a scalar."]},
                )
    return rows


def features_of(rows: list[Row]) -> list[str]:
    """The features the rows give, in the first row's order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)
