"""scikit-learn models saved with joblib, pickle or skops.

Recognised by name and first bytes (``.joblib``/``.pkl``/``.pickle``: a pickle header
or a joblib compression header; ``.skops``: a zip archive)::

    >>> SklearnFramework().sniff(b"\\x80\\x05\\x95...", "iris.joblib")
    'joblib'
    >>> SklearnFramework().check(b"PK\\x03\\x04...", "pickle")
    'a pickle file starts with a pickle header (0x80) or a joblib compression header; these bytes are a zip archive'

Loading a joblib or pickle file runs code from the file, so it happens in worker
processes only. A skops file is loaded only if every type it names that skops does not
trust already is a class of scikit-learn, numpy, ``builtins`` or ``collections`` (or a
numpy ufunc); otherwise :class:`UntrustedTypes` names the others.

The scikit-learn version the file was saved with is in ``library_versions``: the
version sklearn warns about (``InconsistentVersionWarning``) when it differs from the
running one, else the running one (sklearn records its version in every estimator it
pickles). ``details["loaded_with"]`` is the running version.
"""

from __future__ import annotations

import builtins
import collections
import importlib
import json
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from deepaas_like.frameworks import Framework, FrameworkMissing, LoadedModel

from .file_head import compression, describe, is_pickle, is_zip, zip_names
from .onnx import COLUMNS_METADATA

TRUSTED_BUILTIN_MODULES = ("builtins", "collections")
KERAS_ZIP_ENTRIES = ("metadata.json", "config.json", "model.weights.h5")


class UntrustedTypes(ValueError):
    """A skops file names types outside scikit-learn, numpy and Python's builtins."""

    def __init__(self, types: list[str]) -> None:
        super().__init__(
            "the skops file names types that are not trusted: "
            + ", ".join(types)
            + " (only scikit-learn, numpy, builtins and collections classes are)"
        )
        self.types = types


class SklearnFramework(Framework):
    """scikit-learn estimators and pipelines: ``joblib``, ``pickle`` and ``skops`` files."""

    library = "sklearn"
    extra = "sklearn"
    filetypes = ("joblib", "pickle", "skops")
    safe_filetypes = ("skops",)
    extensions = {".joblib": "joblib", ".pkl": "pickle", ".pickle": "pickle", ".skops": "skops"}

    def sniff(self, head: bytes, filename: str) -> str | None:
        filetype = super().sniff(head, filename)
        return filetype if filetype is not None and self.check(head, filetype) is None else None

    def check(self, head: bytes, filetype: str) -> str | None:
        if filetype in ("joblib", "pickle"):
            if is_pickle(head) or compression(head):
                return None
            return (
                f"a {filetype} file starts with a pickle header (0x80) or a joblib compression header; "
                f"these bytes are {describe(head)}"
            )
        if filetype == "skops":
            if not is_zip(head):
                return f"a skops file is a zip archive; these bytes are {describe(head)}"
            names = zip_names(head)
            if names and names[0] in KERAS_ZIP_ENTRIES:
                return f"this zip archive holds {names[0]!r}: a Keras .keras file, not a skops file"
            if names and "/" in names[0]:
                return f"this zip archive holds {names[0]!r}: a PyTorch archive, not a skops file"
            return None
        return f"{filetype} is not a scikit-learn filetype"

    def preload(self) -> None:
        """scikit-learn's common estimators and joblib (about 2 s to import, once per worker)."""
        try:
            import joblib  # noqa: F401
            import sklearn.ensemble  # noqa: F401
            import sklearn.linear_model  # noqa: F401
            import sklearn.pipeline  # noqa: F401
        except ImportError:  # the library is missing: loading will say which extra to install
            pass

    def load(self, path: str, filetype: str) -> LoadedModel:
        """Load the estimator; raise if the file holds something without ``predict`` or unfitted.

        >>> SklearnFramework().load("iris.joblib", "joblib").signature.task
        'classification'
        """
        try:
            import joblib
            import sklearn
            from sklearn.utils.validation import check_is_fitted

            from .sklearn_model import SklearnModel
        except ImportError as exc:
            raise FrameworkMissing(self.library, self.extra, exc) from exc
        with _saved_versions() as versions:
            estimator = _load_skops(path) if filetype == "skops" else joblib.load(path)
        if not callable(getattr(estimator, "predict", None)):
            raise TypeError(
                f"the file holds a {type(estimator).__module__}.{type(estimator).__name__}, "
                "not an estimator with predict()"
            )
        if callable(getattr(estimator, "fit", None)):
            check_is_fitted(estimator)
        saved = (
            versions[0]
            if versions
            else (sklearn.__version__ if type(estimator).__module__.startswith("sklearn.") else None)
        )
        return SklearnModel(estimator, saved)

    def to_onnx(self, model: LoadedModel, probe: Sequence[Sequence[Any]]) -> bytes:
        """The estimator as an ONNX graph (skl2onnx, float32, classifiers without ZipMap).

        Numeric models take one float input ``input`` of shape ``[N, width]``; their column
        names, if any, travel in the graph's metadata (``deepaas_like.columns``), where the
        ONNX framework finds them. A model that picks its columns by name (a
        ``ColumnTransformer``, string columns) takes one ``[N, 1]`` input per column.
        ``probe`` is not used: the caller compares both on it.
        """
        from .sklearn_model import SklearnModel

        if not isinstance(model, SklearnModel):
            raise TypeError(f"not a scikit-learn model: {type(model).__name__}")
        try:
            from skl2onnx import convert_sklearn
            from skl2onnx.common.data_types import FloatTensorType, StringTensorType
        except ImportError as exc:
            raise FrameworkMissing("onnx", "onnx", exc) from exc

        signature = model.signature
        columns = signature.columns
        options = {"zipmap": False} if signature.task == "classification" else None
        if columns is not None and model.by_name:
            inputs = [
                (c.name, StringTensorType([None, 1]) if c.type == "string" else FloatTensorType([None, 1]))
                for c in columns
            ]
        else:
            width = len(columns) if columns is not None else signature.n_inputs
            if width is None:
                width = len(probe[0]) if probe else None
            if width is None:
                raise ValueError("the model's input width is unknown")
            inputs = [("input", FloatTensorType([None, width]))]
        graph = convert_sklearn(model.estimator, initial_types=inputs, options=options)
        if columns is not None and len(inputs) == 1:
            entry = graph.metadata_props.add()
            entry.key, entry.value = COLUMNS_METADATA, json.dumps([c.to_json() for c in columns])
        return graph.SerializeToString()


@contextmanager
def _saved_versions() -> Iterator[list[str]]:
    """Collect the ``original_sklearn_version`` of every InconsistentVersionWarning raised
    inside; other warnings go on as they came."""
    from sklearn.exceptions import InconsistentVersionWarning

    versions: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        yield versions
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            versions.append(warning.message.original_sklearn_version)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno, source=warning.source
            )


def _load_skops(path: str) -> Any:
    try:
        import skops.io
    except ImportError as exc:
        raise FrameworkMissing("sklearn", "sklearn", exc) from exc
    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [name for name in untrusted if not _trustworthy(name)]
    if refused:
        raise UntrustedTypes(refused)
    return skops.io.load(path, trusted=untrusted)


def _trustworthy(name: str) -> bool:
    """A class of scikit-learn; a class or ufunc of numpy; a class of builtins or collections.

    Classes only, for scikit-learn: a function named in the file (a FunctionTransformer's
    ``func``) would be called with what the file gives it, and some of scikit-learn's run
    Python in a subprocess (its test helpers)."""
    module, _, attr = name.rpartition(".")
    if name.startswith("sklearn."):
        try:
            found = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return False
        return isinstance(found, type)
    if module in TRUSTED_BUILTIN_MODULES:
        found = getattr(builtins if module == "builtins" else collections, attr, None)
        return isinstance(found, type)
    if name.startswith("numpy."):
        import numpy as np

        # Only modules numpy has imported itself: a name from the file imports nothing.
        found = getattr(sys.modules.get(module), attr, None)
        return isinstance(found, (type, np.ufunc))
    return False
