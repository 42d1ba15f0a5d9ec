"""Helpers a plugin may call while the server runs its code."""

from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Iterator

STORAGE_ENV = "DEEPAAS_LIKE_STORAGE_DIR"
_storage: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "deepaas_like_storage_dir", default=None
)


def storage_dir() -> Path:
    """Return the directory where this model may keep state (created if needed).

    It is ``<data-dir>/models/<model name>``: it survives restarts and is shared by
    every worker and training of the model, which makes it the place where ``train``
    saves what ``warm`` loads::

        from deepaas_like import storage_dir

        def train(epochs):
            (storage_dir() / "weights.json").write_text(json.dumps(fit(epochs)))

    Outside the server (a plugin's own tests) set ``DEEPAAS_LIKE_STORAGE_DIR``.
    """
    value = _storage.get() or os.environ.get(STORAGE_ENV)
    if not value:
        raise LookupError(
            "storage_dir() is only known while deepaas_like runs the model; "
            f"set {STORAGE_ENV} to use it elsewhere"
        )
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def using_storage_dir(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Make :func:`storage_dir` answer ``path`` for the code run inside the block."""
    token = _storage.set(os.fspath(path) if path is not None else None)
    try:
        yield
    finally:
        _storage.reset(token)
