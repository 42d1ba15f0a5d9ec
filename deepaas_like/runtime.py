"""Helpers a plugin may call while the server runs its code."""

from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Any, Callable, Iterator

STORAGE_ENV = "DEEPAAS_LIKE_STORAGE_DIR"
storage_dir_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("deepaas_like_storage_dir", default=None)
# Set by a worker process: where report_progress() sends its value.
progress_sink: Callable[[float, str | None], None] | None = None
# Set by a worker process: where a hosting plugin (the registry's) reports events to the server.
event_sink: Callable[[str, object], None] | None = None
# Set by a contained worker process: how it gets the uploaded files it serves
# (a deepaas_like.containment.sandbox.FileChannel; None: read them where they lie).
file_channel: Any = None
# Set by a hosting plugin: the worker process ends after the current call, for this reason.
recycle: str | None = None


def storage_dir() -> Path:
    """Return the directory where this model may keep state (created if needed).

    It is ``<data-dir>/models/<model name>`` (with replicas on a PostgreSQL ``--store``,
    ``<artifact-dir>/models/<model name>``, shared by them): it survives restarts and is
    shared by every worker and training of the model, which makes it the place where ``train``
    saves what ``warm`` loads::

        from deepaas_like import storage_dir

        def train(epochs):
            (storage_dir() / "weights.json").write_text(json.dumps(fit(epochs)))

    Outside the server (a plugin's own tests) set ``DEEPAAS_LIKE_STORAGE_DIR``.
    """
    value = storage_dir_var.get() or os.environ.get(STORAGE_ENV)
    if not value:
        raise LookupError(
            f"storage_dir() is only known while deepaas_like runs the model; set {STORAGE_ENV} to use it elsewhere"
        )
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def using_storage_dir(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Make :func:`storage_dir` answer ``path`` for the code run inside the block."""
    token = storage_dir_var.set(os.fspath(path) if path is not None else None)
    try:
        yield
    finally:
        storage_dir_var.reset(token)


def report_progress(fraction: float, message: str | None = None) -> None:
    """Report how far a training is, from inside ``train()``: 0.0 to 1.0, and a note.

    The value shows in the training's document (``progress``, ``progress_message``)
    while it runs. Calling it anywhere else (a plugin's own tests, ``predict``) does
    nothing, so plugins may call it unconditionally::

        from deepaas_like import report_progress

        def train(epochs):
            for epoch in range(epochs):
                fit_one_epoch()
                report_progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
    """
    value = float(fraction)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"progress must be between 0.0 and 1.0, got {fraction!r}")
    sink = progress_sink
    if sink is not None:
        sink(value, None if message is None else str(message)[:500])
