"""The messages of a contained worker, as JSON: nothing in them can run code in the server.

A worker that loads uploaded files may be running its author's code, so what it sends
is hostile input. It writes its messages as JSON (:func:`encode`, orjson: numpy values
become numbers and lists), and the server reads them with :func:`decode`, which builds
only JSON's own values (dicts, lists, strings, numbers, booleans, null: a tree as large
as the message, with no object of any class and no shared parts to blow up), then checks
the message's shape and turns its outcome into an :class:`~deepaas_like.engine.calls.Ok` or a
:class:`~deepaas_like.engine.calls.CallFailure` of checked fields::

    >>> decode(encode(("row", 1, 0, Ok({"label": "setosa"}))))
    ('row', 1, 0, Ok(value={'label': 'setosa'}))
    >>> decode(b'["row", 1, 0, {"ok": 1, "run": "os.system"}]')
    Traceback (most recent call last):
    UnsafeReply: an outcome is {"ok": value} or {"failure": {...}}

Trusted workers (plugins: the operator's code) keep pickle, which carries any value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from .calls import CallFailure, Ok

KINDS = frozenset({"ready", "failed", "progress", "event", "row", "need_file"})
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# A contained worker's failure says what went wrong in words: it may not name argument errors
# (``errors``: the 422 of a model in its own environment, which the server trusts).
_FAILURE_FIELDS = {f.name: f for f in dataclasses.fields(CallFailure) if f.name != "errors"}
_FAILURE_TYPES = {
    "exc_type": str,
    "message": str,
    "traceback": str,
    "missing_method": bool,
    "not_implemented": bool,
    "cause": str,
}
MAX_TEXT = 64 * 1024  # a failure's texts are cut here
Message = tuple[Any, ...]  # a worker's message: its kind, then what that kind carries


class UnsafeReply(ValueError):
    """A worker's message that the server refuses (not JSON, or not of a message's shape)."""


def encode(message: Message) -> bytes:
    """A message as the contained worker sends it (raises TypeError for a value JSON cannot hold)."""
    kind = message[0]
    if kind == "row":
        return orjson.dumps([kind, message[1], message[2], _outcome(message[3])], option=_OPTIONS)
    if kind == "failed":
        return orjson.dumps([kind, _outcome(message[1])], option=_OPTIONS)
    return orjson.dumps(list(message), option=_OPTIONS)


def _outcome(outcome: Any) -> dict[str, Any]:
    if type(outcome) is Ok:
        return {"ok": outcome.value}
    return {"failure": {name: getattr(outcome, name) for name in _FAILURE_FIELDS}}


def decode(data: bytes) -> Message:
    """A contained worker's message: its JSON, checked, with its outcome as Ok or CallFailure."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UnsafeReply(f"not JSON: {exc}") from None
    if type(message) is not list or not message or message[0] not in KINDS:
        raise UnsafeReply("not a worker message")
    kind = message[0]
    if kind == "row":
        if len(message) != 4 or type(message[1]) is not int or type(message[2]) is not int:
            raise UnsafeReply("a row is [row, call id, index, outcome]")
        return ("row", message[1], message[2], _read_outcome(message[3]))
    if kind == "failed":
        if len(message) != 2:
            raise UnsafeReply("a failure is [failed, outcome]")
        return ("failed", _read_outcome(message[1]))
    if kind == "ready":
        if len(message) != 4 or type(message[1]) is not int or type(message[2]) is not dict or message[3] != []:
            raise UnsafeReply("ready is [ready, pid, containment, []]")
    elif kind == "progress":
        if (
            len(message) != 3
            or type(message[1]) not in (int, float)
            or not (message[2] is None or type(message[2]) is str)
        ):
            raise UnsafeReply("progress is [progress, fraction, message]")
    elif kind == "event":
        if len(message) != 3 or type(message[1]) is not str or type(message[2]) is not dict:
            raise UnsafeReply("an event is [event, name, data]")
    elif len(message) != 2 or type(message[1]) is not str:  # need_file
        raise UnsafeReply("need_file is [need_file, key]")
    return tuple(message)


def _read_outcome(value: Any) -> Ok | CallFailure:
    if type(value) is not dict or len(value) != 1:
        raise UnsafeReply('an outcome is {"ok": value} or {"failure": {...}}')
    if "ok" in value:
        return Ok(value["ok"])
    failure = value.get("failure")
    if type(failure) is not dict or set(failure) - set(_FAILURE_FIELDS):
        raise UnsafeReply('an outcome is {"ok": value} or {"failure": {...}}')
    fields: dict[str, Any] = {}
    for name, kind in _FAILURE_TYPES.items():
        if name in failure:
            if type(failure[name]) is not kind:
                raise UnsafeReply(f"a failure's {name} must be a {kind.__name__}")
            fields[name] = failure[name][:MAX_TEXT] if kind is str else failure[name]
    status = failure.get("status")
    if status is not None and (type(status) is not int or not 400 <= status <= 599):
        raise UnsafeReply("a failure's status must be an HTTP error status")
    if "exc_type" not in fields or "message" not in fields:
        raise UnsafeReply("a failure names its exception type and message")
    return CallFailure(**fields, status=status)
