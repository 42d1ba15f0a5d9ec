"""Prediction explanations on the server's side: a model's initialization (the background
rows its explanations are computed against) and the options of an explain request.

The explanations themselves are computed in the model's workers
(:mod:`deepaas_like.engine.explainer`): this module never imports shap.

An initialization is one JSON file per model, ``<data-dir>/explanations/<model>.json``,
written atomically::

    {"model": "irisbench", "features": ["petal_length", ...], "rowCount": 12,
     "rows": [{"petal_length": 1.4, ...}, ...], "created": 1765000000.0, "job": "<uuid>"}
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from ..errors import ArgumentError, Conflict, NotFound
from .samples import Row

MAX_BACKGROUND_ROWS = 1000  # an initialization keeps at most this many rows
OPTIONS = ("maxExplanations", "thresholdLow", "thresholdHigh", "explainClass")


def initialization_route(name: str) -> str:
    return f"/v2/models/{name}/explanations-initialization/"


class InitializationStore:
    """The models' initializations under ``directory`` (one file each, replaced atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            document: dict[str, Any] = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        return document

    def required(self, name: str) -> dict[str, Any]:
        """The model's initialization; 409 naming the route that makes one when it has none."""
        document = self.get(name)
        if document is None:
            route = initialization_route(name)
            raise Conflict(
                f"Model '{name}' has no prediction explanations initialization: POST {route} with its "
                "background rows first",
                details={"model": name, "initialization": route},
            )
        return document

    def put(self, name: str, features: list[str], rows: list[Row], job: str) -> dict[str, Any]:
        document = {
            "model": name,
            "features": features,
            "rowCount": len(rows),
            "rows": rows,
            "created": time.time(),
            "job": job,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self._path(name).with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document))
        os.replace(temporary, self._path(name))
        return document

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            raise NotFound(
                f"Model '{name}' has no prediction explanations initialization", details={"model": name}
            ) from None


def explain_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of an explain request, checked (422 naming the bad one).

    >>> explain_options({"maxExplanations": "2", "thresholdHigh": 0.5})
    {'maxExplanations': 2, 'thresholdLow': None, 'thresholdHigh': 0.5, 'explainClass': None}
    """
    errors: dict[str, list[str]] = {}
    count = _number(given.get("maxExplanations", 3), "maxExplanations", errors, integer=True)
    if isinstance(count, int) and not 0 <= count <= 100:
        errors["maxExplanations"] = ["Must be between 0 and 100."]
    options = {
        "maxExplanations": count,
        "thresholdLow": _number(given.get("thresholdLow"), "thresholdLow", errors),
        "thresholdHigh": _number(given.get("thresholdHigh"), "thresholdHigh", errors),
        "explainClass": None if given.get("explainClass") is None else str(given["explainClass"]),
    }
    if errors:
        raise ArgumentError(f"Invalid explanation options: {', '.join(sorted(errors))}", errors)
    return options


def _number(value: Any, key: str, errors: dict[str, list[str]], integer: bool = False) -> Any:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)
        if integer and not number.is_integer():
            raise ValueError(value)
    except (TypeError, ValueError):
        errors[key] = ["Not a valid integer." if integer else "Not a valid number."]
        return None
    return int(number) if integer else number
