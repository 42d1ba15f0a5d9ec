"""The deprecated vocabulary that DEEPaaS-era plugins use by design, accepted quietly."""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

from marshmallow.warnings import ChangedInMarshmallow4Warning, RemovedInMarshmallow4Warning


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
        warnings.simplefilter("ignore", RemovedInMarshmallow4Warning)
        warnings.simplefilter("ignore", ChangedInMarshmallow4Warning)
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*pkg_resources.*", category=DeprecationWarning)
        yield
