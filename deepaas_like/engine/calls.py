"""The outcome of one call of a model's method: one small type that every layer shares.

A worker (process or thread) produces an outcome per call, the runners and the
dispatcher pass it on untouched, and whoever asked for the call turns it into a value
or an API error with :func:`unwrap`::

    Ok(value)          the method returned ``value``
    CallFailure(...)   the plugin's own code raised (plain data: crosses processes)
    Unserved(error)    the engine could not serve the call: it timed out (504), its
                       worker died while running it (503), the model is stopping
    NotStarted()       the call never began (its worker died first): it may run elsewhere
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..errors import ArgumentError, DeepaasError, ModelError, ModelUnavailable, NotImplementedByModel


@dataclass(frozen=True, slots=True)
class Ok:
    """The method returned ``value``."""

    value: Any


@dataclass(frozen=True)
class CallFailure:
    """What went wrong in a plugin call, as plain data that crosses processes."""

    exc_type: str
    message: str
    traceback: str = ""
    status: int | None = None
    missing_method: bool = False
    not_implemented: bool = False
    cause: str = ""  # the exception it came from, at the root of the chain (a wrapper's own error says less)
    errors: dict[str, list[str]] | None = None  # arguments the worker refused (a model in its own environment)

    @property
    def text(self) -> str:
        """``ValueError: bad input`` (the type alone when there is no message)."""
        return f"{self.exc_type}: {self.message}" if self.message else self.exc_type

    @property
    def explained(self) -> str:
        """:attr:`text`, and the root cause when there is one."""
        return f"{self.text} (caused by {self.cause})" if self.cause else self.text

    def error(self, model: str, method: str) -> DeepaasError:
        """The API error that answers this failure."""
        if self.missing_method or self.not_implemented:
            return NotImplementedByModel(f"Model '{model}' does not implement {method}()", details={"model": model})
        if self.errors is not None:  # the same 422 as the server's own checks give
            return ArgumentError(f"Invalid arguments for {model} {method}: {self.message}", self.errors)
        return ModelError(model, method, self.exc_type, self.message, status=self.status)


@dataclass(frozen=True, slots=True)
class Unserved:
    """The engine could not serve the call; ``error`` is the answer (a 503, a 504...)."""

    error: DeepaasError


@dataclass(frozen=True, slots=True)
class NotStarted:
    """The call never began: its worker went away first. It may safely run elsewhere."""


NOT_STARTED = NotStarted()
Outcome: TypeAlias = Ok | CallFailure | Unserved | NotStarted


def unwrap(outcome: Outcome, model: str, method: str) -> Any:
    """The value of an :class:`Ok`; the matching API error for every other outcome."""
    if type(outcome) is Ok:
        return outcome.value
    if isinstance(outcome, CallFailure):
        raise outcome.error(model, method)
    if isinstance(outcome, Unserved):
        raise outcome.error
    raise ModelUnavailable(f"The worker of model '{model}' went away; retry shortly", model=model)


class MethodMissing(Exception):
    """The plugin does not define the method that was asked for."""


def failure_from_exception(exc: BaseException) -> CallFailure:
    """Describe an exception a plugin raised (aiohttp/werkzeug HTTP errors included)."""
    if isinstance(exc, MethodMissing):
        return CallFailure("MethodMissing", str(exc), missing_method=True)
    status = _http_status(exc)
    message = str(exc)
    if status is not None and not message:
        message = getattr(exc, "reason", "") or getattr(exc, "text", "") or ""
    if isinstance(exc, SystemExit):
        message = f"the plugin called sys.exit({exc.code!r})"
    return CallFailure(
        exc_type=type(exc).__name__,
        message=message,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        status=status,
        not_implemented=isinstance(exc, NotImplementedError),
        cause=root_cause(exc) or "",
    )


def root_cause(exc: BaseException) -> str | None:
    """``FileNotFoundError: [Errno 2] ...`` for the exception at the root of ``exc``'s chain
    (what it was raised from, or while handling), if it is another one."""
    root, seen = exc, {id(exc)}
    while True:
        nxt = (
            root.__cause__ if root.__cause__ is not None else (None if root.__suppress_context__ else root.__context__)
        )
        if nxt is None or id(nxt) in seen or len(seen) > 20:
            break
        seen.add(id(nxt))
        root = nxt
    if root is exc:
        return None
    return f"{type(root).__name__}: {root}" if str(root) else type(root).__name__


def _http_status(exc: BaseException) -> int | None:
    """An HTTP status carried by the exception, as aiohttp and werkzeug errors do."""
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    return None
