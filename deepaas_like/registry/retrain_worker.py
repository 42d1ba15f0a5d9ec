"""The worker side of a retraining (see :mod:`.retrain`): a process of its own, contained as the
registry's hosts are, loads the version's file as a host does, fits a clone of its estimator
(``sklearn.base.clone``: the same hyper-parameters, a fresh fit) on the rows it is sent, and
answers the fitted estimator's file::

    host = RetrainHost()
    refit = host.adapter_for(target).obj        # the version's estimator, loaded
    refit.train(rows=[[5.1, 3.5, 1.4, 0.2], ...], labels=["setosa", ...],
                columns=["sepal_length", ...], filetype="joblib")
    # {"file": "<base64>", "filetype": "joblib", "estimator": "Pipeline", "named": True, "log": "..."}

The file travels base64-encoded because a contained worker's answers are JSON (the server
reads nothing else from it). This module runs in worker processes only: loading the
version's file, and fitting its estimator, may run code its uploader wrote.
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
import warnings
from typing import Any

from ..engine.adapter import ModelAdapter
from .host import RegistryHost, Target

MAX_LOG = 64 * 1024  # what the fit printed, kept for the training's log: its last characters


class NotRetrainable(TypeError):
    """The version's file holds no scikit-learn estimator that can be fitted again (a 422)."""

    status = 422


class RetrainHost:
    """The plugin of a retraining's process: every call names the version it starts from."""

    def __init__(self) -> None:
        self._host = RegistryHost()

    def train(self, **kwargs: Any) -> Any:
        raise NotImplementedError("a retraining names the version it starts from (its target)")

    def adapter_for(self, target: Target) -> ModelAdapter:
        """The version's estimator, loaded as a registry host loads it, ready to be fitted again."""
        loaded = self._host.adapter_for(target).obj.loaded
        return ModelAdapter(target.model, Refit(getattr(loaded, "estimator", None)))


class Refit:
    """A fitted estimator whose clone is fitted on new rows."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def train(self, *, rows: list[list[Any]], labels: list[Any], columns: list[str], filetype: str) -> dict[str, Any]:
        """Fit a clone on ``rows`` (values in ``columns``' order) and ``labels``; answer its file
        (``filetype``: ``joblib``, or ``skops`` for a version that was one). What the fit prints
        or warns is in ``log``."""
        from sklearn.base import clone  # type: ignore[import-untyped]  # no type information

        if not callable(getattr(self.estimator, "fit", None)) or not callable(
            getattr(self.estimator, "get_params", None)
        ):
            kind = type(self.estimator)
            raise NotRetrainable(
                f"the version holds a {kind.__module__}.{kind.__qualname__}, which is not a scikit-learn "
                "estimator with fit() and get_params(): only scikit-learn models can be retrained here"
            )
        fresh = clone(self.estimator)
        output = io.StringIO()
        started = time.perf_counter()
        inputs = _inputs(rows, columns)
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), warnings.catch_warnings():
            warnings.simplefilter("default")  # each kind once, into the log (not raised as errors)
            fresh.fit(inputs, labels)
        seconds = time.perf_counter() - started
        return {
            "file": base64.b64encode(_dump(fresh, filetype)).decode("ascii"),
            "filetype": filetype,
            "estimator": type(fresh).__name__,
            "named": hasattr(inputs, "columns"),  # fitted on a DataFrame: it knows its inputs' names
            "seconds": seconds,
            "log": output.getvalue()[-MAX_LOG:],
        }


def _inputs(rows: list[list[Any]], columns: list[str]) -> Any:
    """The rows as a DataFrame with the columns' names (the fitted estimator then knows them:
    its version's arguments are named), or as one array where pandas is not installed."""
    try:
        import pandas as pd  # type: ignore[import-untyped]  # no type information
    except ImportError:
        import numpy as np

        return np.asarray(rows)
    return pd.DataFrame(rows, columns=columns)


def _dump(estimator: Any, filetype: str) -> bytes:
    if filetype == "skops":
        import skops.io  # type: ignore[import-untyped]  # no type information

        return bytes(skops.io.dumps(estimator))
    import joblib  # type: ignore[import-untyped]  # no type information

    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()
