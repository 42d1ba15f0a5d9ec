"""What the checks and feature impact need from a model: one row, a batch, its memory.

:class:`ServedPredictor` asks a served model (a plugin or an uploaded model) through its
queue, exactly as clients' requests go; :class:`LocalPredictor` calls a plugin in this
process (``deepaas-cli test``). Both validate each row with the model's own argument
declaration, so a bad row is the same 422 it would be over HTTP.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from marshmallow import fields as ma_fields

from ..arguments import ArgumentSources, ArgumentSpec, is_file_field
from ..engine.adapter import ModelAdapter
from ..engine.calls import unwrap
from ..errors import ArgumentError
from ..models import ServedModel
from .samples import Row

SCALARS = (ma_fields.Number, ma_fields.String, ma_fields.Boolean)
PAGE = os.sysconf("SC_PAGE_SIZE")


class Predictor(Protocol):
    name: str

    async def one(self, row: Row) -> Any:
        """One row's prediction (raises the API error a client would get)."""

    async def batch(self, rows: list[Row]) -> list[Any]:
        """Every row's prediction, asked for in one go (one call where the model has a batch path)."""

    def memory(self) -> int | None:
        """Bytes of memory of the processes that run the model (None if unknown)."""


def check_tabular(name: str, spec: ArgumentSpec, features: list[str]) -> None:
    """422 unless the model takes named scalar features and the rows give only those."""
    fields = spec.body_fields
    not_scalar = [key for key, f in fields.items() if is_file_field(f) or not isinstance(f, SCALARS)]
    if not_scalar:
        raise ArgumentError(
            f"Model '{name}' is not tabular: its inputs {', '.join(sorted(not_scalar))} are not single numbers, "
            "strings or booleans, so rows of features cannot drive it",
            {"model": ["Not a tabular model."]},
        )
    unknown = sorted(set(features) - set(spec.accepted))
    if unknown:
        raise ArgumentError(
            f"The rows give {', '.join(unknown)}, which model '{name}' does not take "
            f"(its inputs: {', '.join(spec.accepted)})",
            {"rows": ["Unknown features."]},
        )


def rss_of(pids: list[int]) -> int | None:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            return None
    return total


class ServedPredictor:
    """A served model, asked through its queue like a client's request."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.name = model.name

    def _kwargs(self, row: Row) -> dict[str, Any]:
        return self.model.predict_args.load(ArgumentSources(json=row, lenient=True))

    async def one(self, row: Row) -> Any:
        return await self.model.predict(self._kwargs(row), admit=False)

    async def batch(self, rows: list[Row]) -> list[Any]:
        return await self.model.predict_rows(rows, admit=False)

    def memory(self) -> int | None:
        runner = self.model.runner
        pids = getattr(runner, "worker_pids", None)
        if pids is None:
            pool = getattr(runner, "pool", None)
            pids = getattr(pool, "worker_pids", None)
        return rss_of(pids() if pids is not None else [os.getpid()])


class LocalPredictor:
    """A plugin called in this process (``deepaas-cli test``), one call at a time."""

    def __init__(self, name: str, adapter: ModelAdapter, spec: ArgumentSpec) -> None:
        self.name = name
        self._adapter = adapter
        self._spec = spec

    async def one(self, row: Row) -> Any:
        kwargs = self._spec.load(ArgumentSources(json=row, lenient=True))
        return await asyncio.to_thread(self._call, kwargs)

    def _call(self, kwargs: dict[str, Any]) -> Any:
        try:
            return self._adapter.call("predict", kwargs)
        except ArgumentError:
            raise
        except Exception as exc:
            from ..engine.calls import failure_from_exception

            raise failure_from_exception(exc).error(self.name, "predict") from exc

    async def batch(self, rows: list[Row]) -> list[Any]:
        kwargs = [self._spec.load(ArgumentSources(json=row, lenient=True)) for row in rows]
        if self._adapter.has("predict_batch"):
            outcomes = await asyncio.to_thread(self._adapter.predict_many, kwargs)
            return [unwrap(outcome, self.name, "predict") for outcome in outcomes]
        return [await asyncio.to_thread(self._call, k) for k in kwargs]

    def memory(self) -> int | None:
        return rss_of([os.getpid()])
