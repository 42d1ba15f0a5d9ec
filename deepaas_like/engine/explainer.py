"""Prediction explanations, computed where the model runs: in its worker, never in the server.

:meth:`ModelAdapter.explain <deepaas_like.engine.adapter.ModelAdapter.explain>` hands a
request here unless the model object has an ``explain`` of its own (an uploaded model's
host, :meth:`UploadedModel.explain <deepaas_like.registry.host.UploadedModel.explain>`,
which takes the tree path below where it can). This module imports shap lazily: a model's
own environment without shap answers a clear 501 (:func:`import_shap`).

A request (every value travels to the worker as it is)::

    {"rows": [kwargs, ...],            # the rows to explain, validated like predict's
     "background": [kwargs, ...],      # the initialization's rows or the reference dataset's
     "features": ["petal_length", ...],
     "options": {"maxExplanations": 3, "thresholdLow": None, "thresholdHigh": None,
                 "explainClass": None}}

The answer, per row (:func:`explained_answers`, whichever path computed the strengths):
``{"rowId", "prediction", "predictionValues", "expectedValue", "explainedClass",
"predictionExplanations": [{"feature", "featureValue", "strength", "qualitativeStrength",
"label"}]}``.

The model's answers understood: a number or ``{"value": x}`` (a regression: the number is
explained) or an object with ``probabilities: {class: p}`` (a classifier, irisbench's and an
uploaded classifier's shape: the probability of the explained class is; the prediction is
the answer's ``label``). Anything else is a 422.

The Kernel path (:func:`explain_rows`, every model): the strengths are Shapley values of the
model's output over the features, the features absent taking the background rows' values,
computed by shap's ``KernelExplainer``: every coalition of features is evaluated up to 11
features (:data:`SAMPLES`), so the values are the exact Shapley values; above, a sample of
:data:`SAMPLES` coalitions estimates them. Either way a row's strengths add up to its
prediction minus ``expectedValue`` (the mean prediction over the background: the
explainer's constraint). Each row costs one call of the model's batch path with every
masked row (coalitions x background rows): a request whose first row says that all of
them would take more than :data:`TIME_BUDGET_S` is refused (422, saying how many rows fit)
after that row, so that an explanation holds a worker for a bounded time (100 rows of
irisbench took 28.7 s). shap's ``Exact`` and ``Permutation`` explainers give the same values
but compile their numba code in every new worker (seconds: measured 8 to 16 s on the first
call).

The tree path (:class:`Trees`, an uploaded scikit-learn tree model, :func:`tree_parts`):
shap's ``TreeExplainer``, path-dependent: exact Shapley values of the trees' output, which
add up to the prediction minus ``expectedValue``, here the trees' mean output over their
training data (DataRobot's base value: the average prediction on the training data). The
background is not used on this path (shap 0.51's interventional TreeExplainer, which would
use it, does not add up: see :class:`Trees`), yet it is required all the same: every row is
checked against the model's own answer (within :data:`ADDITIVITY`) and a model whose trees
do not give its answers takes the Kernel path from then on.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

from ..errors import ArgumentError, NotImplementedByModel

Row = dict[str, Any]
Predict = Callable[[list[Row]], list[Any]]  # rows of kwargs -> the model's answers

SAMPLES = 2048  # coalitions evaluated per row: every one (exact Shapley values) up to 11 features
BACKGROUND_LIMIT = 100  # background rows used per explanation (a seeded sample of more)
TIME_BUDGET_S = 10.0  # the Kernel path: a request whose rows would take longer is refused (422)
ADDITIVITY = 1e-6  # the tree path: strengths + expectedValue must give the model's own output within this
REGRESSION_LABEL = "prediction"
# qualitativeStrength: |strength| relative to the row's largest |strength|
QUALITATIVE = ((0.75, 3), (0.25, 2), (0.0, 1))


def qualitative(strength: float, largest: float) -> str:
    """DataRobot's ``+++`` … ``---``: three signs above 3/4 of the row's largest |strength|,
    two above 1/4, one below.

    >>> qualitative(0.4, 0.5), qualitative(-0.2, 0.5), qualitative(0.01, 0.5)
    ('+++', '--', '+')
    """
    ratio = abs(strength) / largest if largest > 0 else 0.0
    count = next(n for bound, n in QUALITATIVE if ratio > bound or bound == 0.0)
    return ("+" if strength >= 0 else "-") * count


def outputs_of(answers: Sequence[Any]) -> tuple[list[str] | None, list[list[float]]]:
    """The model's answers as numbers: (None, [[value], ...]) for a regression (a number, or an
    uploaded model's ``{"value": x}``), (classes, [[p, ...], ...]) for a classifier; 422 for any
    other shape."""
    first = answers[0] if answers else None
    if isinstance(first, Mapping) and isinstance(first.get("probabilities"), Mapping):
        classes = [str(c) for c in first["probabilities"]]
        return classes, [[_number(_probabilities(a).get(c, 0.0)) for c in classes] for a in answers]
    return None, [[_number(a["value"] if isinstance(a, Mapping) and "value" in a else a)] for a in answers]


def _probabilities(answer: Any) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping) or not isinstance(answer.get("probabilities"), Mapping):
        raise _not_numeric(answer)
    return {str(k): v for k, v in answer["probabilities"].items()}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _not_numeric(value)
    return float(value)


def _not_numeric(value: Any) -> ArgumentError:
    return ArgumentError(
        f"The model's answer cannot be explained: {type(value).__name__} {str(value)[:80]!r} is neither a number "
        "(a regression) nor an object with 'probabilities': {class: p} (a classifier)",
        {"model": ["Answers are not numeric."]},
    )


class Columns:
    """The features as a float matrix (what shap masks): numbers as they are, other values
    (text, booleans) as the index of the value in the column's own list."""

    def __init__(self, features: list[str], rows: Sequence[Mapping[str, Any]]) -> None:
        self.features = features
        self.levels: dict[str, list[Any]] = {}
        for feature in features:
            values = [row.get(feature) for row in rows]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                self.levels[feature] = list(dict.fromkeys(values))

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> Any:
        import numpy as np

        return np.array([[self._code(f, row.get(f)) for f in self.features] for row in rows], dtype=float)

    def _code(self, feature: str, value: Any) -> float:
        levels = self.levels.get(feature)
        if levels is None:
            return float(value)
        if value not in levels:
            levels.append(value)
        return float(levels.index(value))

    def decode(self, base: Mapping[str, Any], values: Sequence[float]) -> dict[str, Any]:
        row = dict(base)
        for feature, value in zip(self.features, values, strict=True):
            levels = self.levels.get(feature)
            row[feature] = levels[int(value)] if levels is not None else _plain(value, base.get(feature))
        return row


def _plain(value: float, like: Any) -> Any:
    """A masked value as the feature's own type (an integer stays an integer)."""
    if isinstance(like, int) and not isinstance(like, bool) and float(value).is_integer():
        return int(value)
    return float(value)


def import_shap() -> Any:
    """shap, imported where the model runs; a clear 501 where it is not installed."""
    try:
        with warnings.catch_warnings():  # shap's import deprecates matplotlib's calls: not ours to act on
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import shap  # type: ignore[import-untyped]  # no type information
        logging.getLogger("shap").setLevel(logging.WARNING)  # its INFO lines: every row's values, in the worker's log
    except ImportError as exc:
        raise NotImplementedByModel(
            f"Prediction explanations need shap where the model runs ({exc}); install deepaas_like[explain] "
            "(a model in its own environment: add shap to its requirements)"
        ) from None
    return shap


def explain_rows(predict: Predict, request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every row's prediction and explanation with shap's ``KernelExplainer`` over the model's
    own batched predictions (see the module's docstring)."""
    shap = import_shap()
    rows: list[dict[str, Any]] = [dict(r) for r in request["rows"]]
    background: list[dict[str, Any]] = [dict(r) for r in request["background"]]
    features: list[str] = list(request["features"])
    if len(background) > BACKGROUND_LIMIT:
        background = random.Random(0).sample(background, BACKGROUND_LIMIT)
    kernel = _Kernel(shap, predict, rows, background, features)
    return explained_answers(rows, features, predict(rows), request.get("options") or {}, kernel.attribute)


class _Kernel:
    """Shapley values by shap's ``KernelExplainer``, a row at a time, within :data:`TIME_BUDGET_S`."""

    def __init__(
        self,
        shap: Any,
        predict: Predict,
        rows: list[dict[str, Any]],
        background: list[dict[str, Any]],
        features: list[str],
    ) -> None:
        self.shap, self.predict, self.rows, self.features = shap, predict, rows, features
        self.columns = Columns(features, background + rows)
        self.data = self.columns.encode(background)

    def attribute(self, indices: list[int], targets: list[int]) -> list[tuple[list[float], float]]:
        import numpy as np

        started = time.perf_counter()
        found = []
        for count, (index, target) in enumerate(zip(indices, targets, strict=True)):
            if count == 1:
                _within_budget(time.perf_counter() - started, len(indices), len(self.features), len(self.data))
            row = self.rows[index]

            def model(x: Any, base: dict[str, Any] = row, target: int = target) -> Any:
                asked = [self.columns.decode(base, list(v)) for v in x]
                return np.array([v[target] for v in outputs_of(self.predict(asked))[1]])

            explainer = self.shap.KernelExplainer(model, self.data)
            values = explainer.shap_values(self.columns.encode([row]), nsamples=SAMPLES, l1_reg=False, silent=True)
            expected = float(np.asarray(explainer.expected_value).reshape(-1)[0])
            found.append(([float(s) for s in np.asarray(values).reshape(-1)], expected))
        return found


def _within_budget(first: float, rows: int, features: int, background: int) -> None:
    """422 when the first row's time says that the rest would take more than :data:`TIME_BUDGET_S`."""
    estimate = first * rows
    if estimate <= TIME_BUDGET_S:
        return
    fit = max(1, int(TIME_BUDGET_S / first)) if first > 0 else rows
    raise ArgumentError(
        f"Explaining {rows} rows would take about {estimate:.0f} s (one row took {first:.2f} s: "
        f"{features} features, {background} background rows, shap's KernelExplainer); the limit is "
        f"{TIME_BUDGET_S:g} s per request: send at most {fit} rows at a time",
        {"rows": [f"At most {fit} rows per request for this model."]},
    )


Attribute = Callable[[list[int], list[int]], list[tuple[list[float], float]]]
"""(the rows explained, the output explained in each) -> (strengths by feature, expected value) per row"""


def explained_answers(
    rows: list[dict[str, Any]],
    features: list[str],
    answers: Sequence[Any],
    options: Mapping[str, Any],
    attribute: Attribute,
) -> list[dict[str, Any]]:
    """The answer of every row (see the module's docstring): its prediction from ``answers`` (the
    model's own), its explanation from ``attribute`` for the rows the thresholds leave in."""
    classes, outputs = outputs_of(answers)
    wanted = options.get("explainClass")
    if wanted is not None and (classes is None or str(wanted) not in classes):
        said = f"one of {', '.join(classes)}" if classes else "none: the model is a regression"
        raise ArgumentError(
            f"explainClass {wanted!r} is not a class of the model ({said})", {"explainClass": ["Unknown class."]}
        )
    results = []
    pending: list[tuple[int, int]] = []  # (row, output explained)
    for index, (answer, values) in enumerate(zip(answers, outputs, strict=True)):
        target = _target(classes, values, wanted, answer)
        results.append(_prediction(index, classes, values, target, answer))
        if _explained(values[target], options):
            pending.append((index, target))
    found = attribute([i for i, _ in pending], [t for _, t in pending]) if pending else []
    for (index, target), (strengths, expected) in zip(pending, found, strict=True):
        label = classes[target] if classes is not None else REGRESSION_LABEL
        results[index]["expectedValue"] = expected
        results[index]["predictionExplanations"] = _explanations(features, rows[index], strengths, label, options)
    return results


def _target(classes: list[str] | None, values: list[float], wanted: Any, answer: Any) -> int:
    """The output explained: the class asked for, else the predicted one (a regression: its value)."""
    if classes is None:
        return 0
    if wanted is not None:
        return classes.index(str(wanted))
    return _predicted(classes, values, answer)


def _predicted(classes: list[str], values: list[float], answer: Any) -> int:
    """The class the model answered (its ``label``), else the most probable one."""
    label = answer.get("label") if isinstance(answer, Mapping) else None
    if label is not None and str(label) in classes:
        return classes.index(str(label))
    return max(range(len(values)), key=values.__getitem__)


def _prediction(index: int, classes: list[str] | None, values: list[float], target: int, answer: Any) -> dict[str, Any]:
    if classes is None:
        return {"rowId": index, "prediction": values[0], "predictionExplanations": []}
    label = answer.get("label") if isinstance(answer, Mapping) else None
    best = _predicted(classes, values, answer)
    return {
        "rowId": index,
        "prediction": label if label is not None and str(label) == classes[best] else classes[best],
        "predictionValues": [{"label": c, "value": v} for c, v in zip(classes, values, strict=True)],
        "explainedClass": classes[target],
        "predictionExplanations": [],
    }


def _explained(value: float, options: Mapping[str, Any]) -> bool:
    """DataRobot's thresholds: with either given, only a prediction below ``thresholdLow`` or
    above ``thresholdHigh`` is explained; with neither, every one."""
    low, high = options.get("thresholdLow"), options.get("thresholdHigh")
    if low is None and high is None:
        return True
    return (low is not None and value < low) or (high is not None and value > high)


def _explanations(
    features: list[str], row: Mapping[str, Any], strengths: list[float], label: str, options: Mapping[str, Any]
) -> list[dict[str, Any]]:
    largest = max((abs(s) for s in strengths if math.isfinite(s)), default=0.0)
    ranked = sorted(zip(features, strengths, strict=True), key=lambda fs: -abs(fs[1]))
    return [
        {
            "feature": feature,
            "featureValue": row.get(feature),
            "strength": strength,
            "qualitativeStrength": qualitative(strength, largest),
            "label": label,
        }
        for feature, strength in ranked[: int(options.get("maxExplanations", 3))]
    ]


# --- the tree path: an uploaded scikit-learn tree model ------------------------------------

# Trees whose raw output is the prediction itself (a forest of classifiers: the probabilities;
# GradientBoostingClassifier's is log-odds, so it takes the Kernel path), and the steps before
# them that change each feature alone and monotonically (the trees' paths, hence the values,
# are the same on the scaled features as on the features given).
TREES = frozenset(
    {
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "ExtraTreeClassifier",
        "ExtraTreeRegressor",
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "GradientBoostingRegressor",
        "HistGradientBoostingRegressor",
    }
)
SCALERS = frozenset({"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler"})


class NotAdditive(Exception):
    """The tree path's strengths do not add up to the model's own answer: take the Kernel path."""


def tree_parts(estimator: Any) -> tuple[list[Any], Any] | None:
    """(the per-feature scalers before it, the trees) of a fitted scikit-learn tree model that
    shap's TreeExplainer reads exactly: a tree or a forest of scikit-learn's own (see
    :data:`TREES`), alone or last in a Pipeline of :data:`SCALERS`; None for any other model."""
    steps = [step for _, step in estimator.steps] if type(estimator).__name__ == "Pipeline" else [estimator]
    *scalers, final = steps
    own = all(type(s).__module__.startswith("sklearn.") for s in steps)
    if not own or type(final).__name__ not in TREES or getattr(final, "n_outputs_", 1) != 1:
        return None
    if any(type(s).__name__ not in SCALERS for s in scalers):
        return None
    return scalers, final


class Trees:
    """Shapley values of a tree model by shap's ``TreeExplainer``, built once per model.

    ``feature_perturbation="tree_path_dependent"``: exact, about 0.1 ms a row for 100 trees;
    ``expectedValue`` is the trees' mean output over their training data (their nodes' sample
    weights). shap 0.51's ``"interventional"`` (against the background rows) is not additive
    (measured on an iris forest: strengths off by up to 0.1 of a probability for one
    background row) and costs rows x background tree walks (0.43 s for 100 rows x 100).
    """

    def __init__(self, shap: Any, estimator: Any) -> None:
        parts = tree_parts(estimator)
        assert parts is not None, "tree_parts() said which models are trees"
        self.scalers, final = parts
        self.explainer = shap.TreeExplainer(final, feature_perturbation="tree_path_dependent")
        classes = getattr(final, "classes_", None)
        self.classes = [str(c) for c in classes] if classes is not None else None

    def attribute(self, inputs: Any, answers: Sequence[Any]) -> Attribute:
        """The :data:`Attribute` of the rows ``inputs`` (a float matrix in the model's input
        order), each checked against the model's own answer (:class:`NotAdditive` if off)."""
        import numpy as np

        classes, outputs = outputs_of(answers)

        def attribute(indices: list[int], targets: list[int]) -> list[tuple[list[float], float]]:
            x = np.asarray(inputs, dtype=np.float64)[indices]
            with warnings.catch_warnings():  # the rows are in the columns' order: their names add nothing
                warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
                for scaler in self.scalers:
                    x = scaler.transform(x)
            values = np.asarray(self.explainer.shap_values(x, check_additivity=False))
            expected = np.asarray(self.explainer.expected_value, dtype=np.float64).reshape(-1)
            if (classes is None) != (values.ndim == 2) or (classes is not None and classes != self.classes):
                raise NotAdditive("the trees' outputs are not the model's answers")
            found = []
            for row, (index, target) in enumerate(zip(indices, targets, strict=True)):
                strengths = values[row] if classes is None else values[row, :, target]
                base = float(expected[0 if classes is None else target])
                wanted = outputs[index][target]
                if abs(float(strengths.sum()) + base - wanted) > ADDITIVITY * max(1.0, abs(wanted)):
                    raise NotAdditive(f"row {index}: {float(strengths.sum()) + base} is not {wanted}")
                found.append(([float(s) for s in strengths], base))
            return found

        return attribute
