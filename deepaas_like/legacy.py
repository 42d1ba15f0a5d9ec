"""The deprecated vocabulary that DEEPaaS-era plugins use by design, accepted quietly."""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Iterator


@functools.cache
def _marshmallow_warnings() -> tuple[type[Warning], ...]:
    """marshmallow 3.26's deprecation warnings, where this marshmallow has them (a worker in a
    model's own environment may have an older one, or none)."""
    try:
        from marshmallow import warnings as ma_warnings
    except ImportError:
        return ()
    names = ("RemovedInMarshmallow4Warning", "ChangedInMarshmallow4Warning")
    return tuple(w for w in (getattr(ma_warnings, n, None) for n in names) if isinstance(w, type))


@contextlib.contextmanager
def legacy_vocabulary_allowed() -> Iterator[None]:
    """Silence the deprecation warnings that DEEPaaS-era plugins trigger by design.

    ``missing=``, ``description=``, ``fields.Field(...)`` and importing
    ``pkg_resources`` all warn under marshmallow 3.26 / setuptools; they are the
    vocabulary we promise to accept, so they are not the operator's problem::

        with legacy_vocabulary_allowed():
            declared = plugin.get_predict_args()
    """
    with warnings.catch_warnings():
        for category in _marshmallow_warnings():
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*pkg_resources.*", category=DeprecationWarning)
        yield
