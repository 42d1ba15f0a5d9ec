"""A fitted scikit-learn estimator as a :class:`~deepaas_like.frameworks.LoadedModel`.

Imported only when a file is loaded (it imports numpy). The signature comes from the
fitted attributes: ``classes_``, ``feature_names_in_``/``n_features_in_``, and the
categories of a ``ColumnTransformer``'s encoders (which columns take strings)::

    model = SklearnModel(pipeline, saved_version="1.5.2")
    model.signature.columns[0].name        # 'sepal_length'
    model.predict([[5.1, 3.5, 1.4, 0.2]])  # [{'label': 'setosa', 'probabilities': {...}}]

Rows of numbers go to the estimator as one float64 array, as if it were called
directly; a pandas DataFrame is built only for an estimator that needs one (a
``ColumnTransformer`` that picks columns by name, or a string column). A bare random
forest (or extra trees) is averaged here over its trees, as it would do itself, without
the thread pool it starts on every call: the same numbers, about 7 times faster for a row.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import sklearn

from deepaas_like.frameworks import Column, LoadedModel, Signature

from .answers import classified, plain, tensors, valued

# What sklearn says when an estimator fitted on a DataFrame is given an array: the
# array's columns are in the signature's order, so the warning says nothing here.
NO_FEATURE_NAMES = "X does not have valid feature names"
# Classifiers whose predict() is not the argmax of predict_proba(): ask them for labels.
LABELS_NOT_ARGMAX = {"SVC", "NuSVC", "FixedThresholdClassifier", "TunedThresholdClassifierCV"}
MAX_CHOICES = 100


class SklearnModel(LoadedModel):
    """A fitted estimator (or pipeline) answering rows, one dict per row.

    ``by_name``: whether it picks its input columns by name (a ``ColumnTransformer``, or a
    string column), so that rows reach it as a DataFrame with the signature's columns.
    """

    def __init__(self, estimator: Any, saved_version: str | None = None) -> None:
        self.estimator = estimator
        self.signature = _signature(estimator, saved_version)
        columns = self.signature.columns
        self._names = [c.name for c in columns] if columns is not None else None
        self._width = len(columns) if columns is not None else self.signature.n_inputs
        self.by_name = columns is not None and (
            any(c.type == "string" for c in columns) or _column_transformer(estimator) is not None
        )
        self._quiet = hasattr(estimator, "feature_names_in_") and not self.by_name
        self._classes = self.signature.classes
        self._proba = self.signature.task == "classification" and hasattr(estimator, "predict_proba")
        self._argmax = self._proba and _labels_are_argmax(estimator)
        self._forest = _is_plain_forest(estimator)

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """One answer per row: ``{"label", "probabilities"}``, ``{"value"}`` or ``{"values"}``.

        >>> SklearnModel(iris_forest).predict([[5.1, 3.5, 1.4, 0.2]])
        [{'label': 0, 'probabilities': {'0': 1.0, '1': 0.0, '2': 0.0}}]
        """
        if not rows:
            return []
        x = self._inputs(rows)
        if self._forest and np.isfinite(x).all():
            return self._forest_answers(x)
        if self._quiet:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", NO_FEATURE_NAMES, UserWarning)
                return self._answers(x)
        return self._answers(x)

    def _inputs(self, rows: Sequence[Sequence[Any]]) -> Any:
        if self.by_name:
            return _frame(rows, self._names)
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or (self._width is not None and x.shape[1] != self._width):
            raise ValueError(
                f"each row needs {self._width or 'the same number of'} numbers; got rows of shape {list(x.shape[1:])}"
            )
        return x

    def _answers(self, x: Any) -> list[dict[str, Any]]:
        estimator = self.estimator
        if self._proba:
            proba = estimator.predict_proba(x)
            if self._argmax:
                labels = [self._classes[i] for i in proba.argmax(axis=1).tolist()]
            else:
                labels = [plain(v) for v in estimator.predict(x)]
            return classified(self._classes, labels, proba.tolist())
        predicted = np.asarray(estimator.predict(x))
        if self.signature.task == "classification":
            return classified(self._classes, predicted.tolist(), None)
        if self.signature.task == "regression":
            return valued(predicted.astype(np.float64).tolist())
        return tensors(predicted.tolist())

    def _forest_answers(self, x: Any) -> list[dict[str, Any]]:
        """A random forest's (or extra trees') answers as it computes them, without its per-call
        thread pool: the mean of its trees' outputs, summed in the same order (so the same
        numbers), at a seventh of the cost for a row (about 90 us instead of 600 us for 10 trees).
        """
        trees = self.estimator.estimators_
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # what forests do to X before their trees see it
        if self._proba:
            total = np.zeros((len(x32), len(self._classes)))
            for tree in trees:
                total += tree.predict_proba(x32, check_input=False)
            total /= len(trees)
            labels = [self._classes[i] for i in total.argmax(axis=1).tolist()]
            return classified(self._classes, labels, total.tolist())
        total = np.zeros(len(x32))
        for tree in trees:
            total += tree.predict(x32, check_input=False)
        total /= len(trees)
        return valued(total.tolist())


def _frame(rows: Sequence[Sequence[Any]], names: list[str] | None) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise RuntimeError(
            f"this estimator picks its input columns by name or takes strings: serving it needs pandas ({exc})"
        ) from exc
    return pd.DataFrame(list(rows), columns=names)


# --- the signature ---------------------------------------------------------------------


def _signature(estimator: Any, saved_version: str | None) -> Signature:
    classes = getattr(estimator, "classes_", None)
    multi_output = isinstance(classes, list)  # a multi-output classifier: one array per output
    if multi_output:
        task, classes = "tensor", None
    elif classes is not None or hasattr(estimator, "predict_proba"):
        task = "classification"
        classes = [plain(c) for c in classes] if classes is not None else None
    else:
        task = "regression"
    names = getattr(estimator, "feature_names_in_", None)
    columns = _columns(estimator, [str(n) for n in names]) if names is not None else None
    n_inputs = getattr(estimator, "n_features_in_", None) if columns is None else None
    return Signature(
        task=task,
        columns=columns,
        n_inputs=int(n_inputs) if n_inputs is not None else None,
        classes=classes,
        library_versions={"scikit-learn": saved_version} if saved_version else {},
        details={"estimator": _describe(estimator), "loaded_with": {"scikit-learn": sklearn.__version__}},
    )


def _describe(estimator: Any) -> str:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return "Pipeline(" + ", ".join(_describe(step) for _, step in estimator.steps) + ")"
    return type(estimator).__name__


def _columns(estimator: Any, names: list[str]) -> list[Column]:
    """One number column per name, unless an encoder of a ColumnTransformer was fitted on
    strings for it (then ``string``, with the categories as choices if unknown ones fail)."""
    kinds: dict[str, dict[str, Any]] = {}
    transformer = _column_transformer(estimator)
    if transformer is not None:
        for _, step, selected in getattr(transformer, "transformers_", []):
            encoder = _encoder(step)
            if encoder is None:
                continue
            for index, name in enumerate(_selected_names(selected, names)):
                if index < len(encoder.categories_):
                    kinds[name] = _kind(encoder.categories_[index], getattr(encoder, "handle_unknown", None))
    return [Column(name=name, **kinds.get(name, {})) for name in names]


def _kind(categories: Any, handle_unknown: str | None) -> dict[str, Any]:
    values = [plain(v) for v in categories]
    kind = "string" if np.asarray(categories).dtype.kind in "OUS" else "number"
    known = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if handle_unknown == "error" and len(known) <= MAX_CHOICES:
        return {"type": kind, "choices": known}
    return {"type": kind}


def _encoder(step: Any) -> Any:
    from sklearn.pipeline import Pipeline

    candidates = [s for _, s in step.steps] if isinstance(step, Pipeline) else [step]
    for candidate in candidates:
        if hasattr(candidate, "categories_"):
            return candidate
    return None


def _selected_names(selected: Any, names: list[str]) -> list[str]:
    if isinstance(selected, (str, int)):
        selected = [selected]
    if not isinstance(selected, (list, tuple, np.ndarray)):
        return []
    out = []
    for item in selected:
        item = plain(item)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            out.append(names[item])
        else:
            return []
    return out


def _leading(estimator: Any) -> Iterator[Any]:
    """The estimator, then the ones that see its input first (a Pipeline's first step, a search's best)."""
    from sklearn.pipeline import Pipeline

    while estimator is not None:
        yield estimator
        if isinstance(estimator, Pipeline):
            estimator = estimator.steps[0][1]
        else:
            estimator = getattr(estimator, "best_estimator_", None)


def _column_transformer(estimator: Any) -> Any:
    from sklearn.compose import ColumnTransformer

    return next((e for e in _leading(estimator) if isinstance(e, ColumnTransformer)), None)


def _is_plain_forest(estimator: Any) -> bool:
    """A fitted single-output RandomForest or ExtraTrees, classifier or regressor, of sklearn's own."""
    from sklearn import ensemble

    forests = (
        ensemble.RandomForestClassifier,
        ensemble.ExtraTreesClassifier,
        ensemble.RandomForestRegressor,
        ensemble.ExtraTreesRegressor,
    )
    return type(estimator) in forests and getattr(estimator, "n_outputs_", None) == 1


def _labels_are_argmax(estimator: Any) -> bool:
    """Whether the label is the class of the highest probability (as for most sklearn classifiers)."""
    from sklearn.pipeline import Pipeline

    final = estimator
    while True:
        if isinstance(final, Pipeline):
            final = final.steps[-1][1]
        elif hasattr(final, "best_estimator_"):
            final = final.best_estimator_
        else:
            break
    return type(final).__module__.startswith("sklearn.") and type(final).__name__ not in LABELS_NOT_ARGMAX
