"""Reading what a contained worker sends, without letting it run code in the server.

A worker that loads uploaded files may be running its author's code, so its messages are
hostile input. :func:`safe_loads` reads them with an unpickler that constructs nothing
but plain data: the built-in containers, numbers, strings and bytes (which pickle
writes as opcodes), numpy arrays, dtypes and scalars, and the two outcome types a
worker answers with (:class:`~deepaas_like.calls.Ok`, :class:`~deepaas_like.calls.CallFailure`).
Any other global in the stream (``os.system``, ``builtins.eval``, a class with a
``__reduce__``) is refused before it is looked up. :func:`check_message` then checks
the message's shape, so that a lie about a field's type is an error here, not later::

    >>> safe_loads(pickle.dumps(("row", 1, 0, Ok({"label": "setosa"}))))
    ('row', 1, 0, Ok(value={'label': 'setosa'}))
    >>> safe_loads(pickle.dumps(os.system))
    Traceback (most recent call last):
    UnsafeReply: the worker sent a posix.system, which the server does not read
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

from .calls import CallFailure, Ok

# (module, name) -> what it may construct. numpy moved its internals to numpy._core in 2.0.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("deepaas_like.calls", "Ok"): Ok,
    ("deepaas_like.calls", "CallFailure"): CallFailure,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
}
_NUMPY = {
    (module, name)
    for base in ("numpy.core", "numpy._core")
    for module, name in ((f"{base}.multiarray", "_reconstruct"), (f"{base}.multiarray", "scalar"),
                         (f"{base}.numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_NUMPY_DTYPES = ("numpy.dtypes",)  # numpy 2 pickles a dtype through its class, e.g. numpy.dtypes.Float64DType
KINDS = {"ready", "failed", "progress", "event", "row", "need_file"}
_FAILURE_FIELDS = {"exc_type": str, "message": str, "traceback": str}


class UnsafeReply(ValueError):
    """A worker's message that the server refuses to read (a global it does not admit, or
    a message of the wrong shape)."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if (module, name) in _NUMPY or (module in _NUMPY_DTYPES and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafeReply(f"the worker sent a {module}.{name}, which the server does not read")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` admitting only plain data (see the module documentation)."""
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except UnsafeReply:
        raise
    except Exception as exc:
        raise UnsafeReply(f"unreadable message: {type(exc).__name__}: {exc}") from None


def check_message(message: Any) -> tuple:
    """``message`` if it has the shape of a worker's message, else :class:`UnsafeReply`."""
    if type(message) is not tuple or not message or message[0] not in KINDS:
        raise UnsafeReply(f"not a worker message: {type(message).__name__}")
    kind = message[0]
    if kind == "row":
        if len(message) != 4 or type(message[1]) is not int or type(message[2]) is not int:
            raise UnsafeReply("a row must be (row, call id, index, outcome)")
        _check_outcome(message[3])
    elif kind == "failed":
        if len(message) != 2:
            raise UnsafeReply("a failure must be (failed, CallFailure)")
        _check_outcome(message[1])
    elif kind == "ready":
        if len(message) != 3 or type(message[1]) is not int or not isinstance(message[2], (dict, type(None))):
            raise UnsafeReply("ready must be (ready, pid, containment)")
    elif kind == "progress":
        if len(message) != 3 or type(message[1]) not in (int, float) or not isinstance(message[2], (str, type(None))):
            raise UnsafeReply("progress must be (progress, fraction, message)")
    elif kind == "event":
        if len(message) != 3 or type(message[1]) is not str or type(message[2]) is not dict:
            raise UnsafeReply("an event must be (event, name, data)")
    elif len(message) != 2 or type(message[1]) is not str:  # need_file
        raise UnsafeReply("need_file must be (need_file, key)")
    return message


def _check_outcome(outcome: Any) -> None:
    if type(outcome) is Ok:
        return
    if type(outcome) is not CallFailure:
        raise UnsafeReply(f"an outcome must be Ok or CallFailure, not {type(outcome).__name__}")
    state = vars(outcome)
    if set(state) - {f.name for f in dataclasses.fields(CallFailure)}:
        raise UnsafeReply("a CallFailure with fields of its own")
    for name, kind in _FAILURE_FIELDS.items():
        if type(state.get(name)) is not kind:
            raise UnsafeReply(f"CallFailure.{name} must be a {kind.__name__}")
    status = state.get("status")
    if status is not None and (type(status) is not int or not 400 <= status <= 599):
        raise UnsafeReply("CallFailure.status must be an HTTP error status")
    for flag in ("missing_method", "not_implemented"):
        if type(state.get(flag, False)) is not bool:
            raise UnsafeReply(f"CallFailure.{flag} must be a boolean")
