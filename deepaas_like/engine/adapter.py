"""Calling a plugin's methods, identically in a worker process or a server thread."""

from __future__ import annotations

import io
import logging
import os
from typing import Any, Callable, Mapping, Sequence

from ..files import ReturnedFile
from ..runtime import storage_dir_var, using_storage_dir
from .calls import CallFailure, MethodMissing, Ok, Outcome, failure_from_exception

LOG = logging.getLogger(__name__)
EXPLAIN = "explain"


class ModelAdapter:
    """Runs one plugin object's methods with the server's conventions applied.

    ``predict`` results are normalised so that they can leave the worker: open files
    become :class:`ReturnedFile` (or ``bytes`` for in-memory buffers).
    """

    def __init__(self, name: str, obj: Any, storage_dir: str | None = None) -> None:
        self.name = name
        self.obj = obj
        self.storage_dir = storage_dir

    def has(self, method: str) -> bool:
        """The plugin defines ``method`` (BaseModel's optional placeholders do not count)."""
        fn = getattr(self.obj, method, None)
        return callable(fn) and not getattr(fn, "__deepaas_like_placeholder__", False)

    def call(self, method: str, kwargs: Mapping[str, Any] | None = None) -> Any:
        if method == EXPLAIN and not self.has(EXPLAIN):
            return self.explain(kwargs or {})
        fn = getattr(self.obj, method, None)
        if not callable(fn):
            raise MethodMissing(method)
        token = storage_dir_var.set(self.storage_dir)
        try:
            result = fn(**(kwargs or {}))
        finally:
            storage_dir_var.reset(token)
        if method == "predict":
            return normalize_output(result)
        return result

    def warm(self) -> None:
        """Run ``warm()`` if the plugin has one (DEEPaaS made it optional too)."""
        if self.has("warm"):
            self.call("warm")

    def predict_many(self, rows: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        """Predict several requests in one call; one outcome per row.

        With a ``predict_batch(rows) -> list`` the plugin gets every row at once (an
        exception *instance* in the returned list fails only that row). If
        ``predict_batch`` raises, the rows are run one by one through ``predict`` so
        that only the bad row fails. Without ``predict_batch``, rows run one by one.
        """
        if self.has("predict_batch") and len(rows) > 0:
            try:
                with using_storage_dir(self.storage_dir):
                    outputs = list(self.obj.predict_batch([dict(row) for row in rows]))
                if len(outputs) != len(rows):
                    raise ValueError(f"predict_batch() returned {len(outputs)} results for {len(rows)} rows")
                return [
                    failure_from_exception(out) if isinstance(out, BaseException) else Ok(normalize_output(out))
                    for out in outputs
                ]
            except Exception as exc:
                if not self.has("predict") or len(rows) == 1:
                    return [failure_from_exception(exc)] * len(rows)
                LOG.warning(
                    "model %s: predict_batch() failed (%s); running the %d rows one by one", self.name, exc, len(rows)
                )
        return [execute(self, "predict", row) for row in rows]

    def explain(self, request: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Explain the predictions of ``request["rows"]`` with shap over this model's own
        predictions (see :mod:`deepaas_like.engine.explainer`; shap is imported there, in
        the worker). A model object with an ``explain(rows, background, features, options)``
        of its own answers instead (``call("explain", request)`` goes to it)."""
        from .explainer import explain_rows

        return explain_rows(self._answers, request)

    def _answers(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Each row's prediction (``predict_batch`` when the plugin has it); a failed one raises."""
        answers = []
        for outcome in self.predict_many(rows):
            if type(outcome) is not Ok:
                assert isinstance(outcome, CallFailure)
                raise outcome.error(self.name, "predict")
            answers.append(outcome.value)
        return answers


def execute(adapter: ModelAdapter, method: str, payload: Mapping[str, Any] | None) -> Ok | CallFailure:
    """Run one plugin call as a worker does: :class:`Ok` or the :class:`CallFailure`."""
    try:
        return Ok(adapter.call(method, payload))
    except BaseException as exc:  # a plugin may raise anything, SystemExit included
        return failure_from_exception(exc)


def execute_group(
    adapter: ModelAdapter,
    method: str,
    payloads: Sequence[Any],
    deliver: Callable[[int, Outcome], None],
    may_start: Callable[[int], bool] | None = None,
) -> None:
    """Run a group of calls, handing each outcome to ``deliver(index, outcome)`` as it comes.

    ``method`` ``"predict_batch"`` runs the whole group as one batch (see
    :meth:`ModelAdapter.predict_many`); any other method runs the rows one by one, each
    only if ``may_start(index)`` allows it (a caller that gave up on the rest of the
    group stops it there; the rows not run are not delivered).
    """
    if method == "predict_batch":
        if may_start is not None and not may_start(0):
            return
        try:
            outcomes = adapter.predict_many(payloads)
        except BaseException as exc:  # noqa: BLE001 - reported per row
            outcomes = [failure_from_exception(exc)] * len(payloads)
        for index, outcome in enumerate(outcomes):
            deliver(index, outcome)
        return
    for index, payload in enumerate(payloads):
        if may_start is not None and not may_start(index):
            return
        deliver(index, execute(adapter, method, payload))


def normalize_output(result: Any) -> Any:
    """Turn file objects into values that can be pickled and sent as a response."""
    if isinstance(result, ReturnedFile):
        return result
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, (io.BufferedReader, io.FileIO)):
        name = getattr(result, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            result.close()
            return ReturnedFile(filename=os.path.abspath(name), original_filename=os.path.basename(name))
    if callable(getattr(result, "read", None)):
        try:
            if getattr(result, "seekable", lambda: False)():
                result.seek(0)
            data = result.read()
        finally:
            close = getattr(result, "close", None)
            if callable(close):
                close()
        return data.encode() if isinstance(data, str) else bytes(data)
    return result
