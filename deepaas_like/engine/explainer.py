"""Prediction explanations, computed where the model runs: in its worker, never in the server.

:meth:`ModelAdapter.explain <deepaas_like.engine.adapter.ModelAdapter.explain>` hands a
request here unless the model object has an ``explain`` of its own (an uploaded model's
host may answer with shap's TreeExplainer). This module imports shap lazily: a model's
own environment without shap answers a clear 501.

A request (every value travels to the worker as it is)::

    {"rows": [kwargs, ...],            # the rows to explain, validated like predict's
     "background": [kwargs, ...],      # the initialization's rows (the reference sample)
     "features": ["petal_length", ...],
     "options": {"maxExplanations": 3, "thresholdLow": None, "thresholdHigh": None,
                 "explainClass": None}}

The answer, per row: ``{"rowId", "prediction", "predictionValues", "expectedValue",
"explainedClass", "predictionExplanations": [{"feature", "featureValue", "strength",
"qualitativeStrength", "label"}]}``.

The model's answers understood: a number (a regression: the number is explained) or an
object with ``probabilities: {class: p}`` (a classifier, irisbench's shape: the
probability of the explained class is). Anything else is a 422.

The strengths are Shapley values of the model's output over the features, the features
absent taking the background rows' values, computed by shap's ``KernelExplainer``: every
coalition of features is evaluated up to 11 features (:data:`SAMPLES`), so the values are
the exact Shapley values; above, a sample of :data:`SAMPLES` coalitions estimates them.
Either way a row's strengths add up to its prediction minus ``expectedValue`` (the mean
prediction over the background: the explainer's constraint). Each row costs one call of
the model's batch path with every masked row (coalitions × background rows). shap's
``Exact`` and ``Permutation`` explainers give the same values but compile their numba
code in every new worker (seconds: measured 8 to 16 s on the first call).
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from typing import Any, Callable, Mapping, Sequence

from ..errors import ArgumentError, NotImplementedByModel

Predict = Callable[[list[dict[str, Any]]], list[Any]]  # rows of kwargs -> the model's answers

SAMPLES = 2048  # coalitions evaluated per row: every one (exact Shapley values) up to 11 features
BACKGROUND_LIMIT = 100  # background rows used per explanation (a seeded sample of more)
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
    """The model's answers as numbers: (None, [[value], ...]) for a regression, (classes,
    [[p, ...], ...]) for a classifier; 422 for any other shape."""
    first = answers[0] if answers else None
    if isinstance(first, Mapping) and isinstance(first.get("probabilities"), Mapping):
        classes = [str(c) for c in first["probabilities"]]
        return classes, [[_number(_probabilities(a).get(c, 0.0)) for c in classes] for a in answers]
    return None, [[_number(a)] for a in answers]


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


def explain_rows(predict: Predict, request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every row's prediction and explanation (see the module's docstring)."""
    try:
        import numpy as np

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
    rows: list[dict[str, Any]] = [dict(r) for r in request["rows"]]
    background: list[dict[str, Any]] = [dict(r) for r in request["background"]]
    features: list[str] = list(request["features"])
    options: Mapping[str, Any] = request.get("options") or {}
    if len(background) > BACKGROUND_LIMIT:
        background = random.Random(0).sample(background, BACKGROUND_LIMIT)
    classes, outputs = outputs_of(predict(rows))
    wanted = options.get("explainClass")
    if wanted is not None and (classes is None or str(wanted) not in classes):
        said = f"one of {', '.join(classes)}" if classes else "none: the model is a regression"
        raise ArgumentError(
            f"explainClass {wanted!r} is not a class of the model ({said})", {"explainClass": ["Unknown class."]}
        )
    columns = Columns(features, background + rows)
    data = columns.encode(background)
    answers = []
    for index, (row, values) in enumerate(zip(rows, outputs, strict=True)):
        target = _target(classes, values, wanted)
        answer = _prediction(index, classes, values, target)
        if _explained(values[target], options):

            def model(x: Any, base: dict[str, Any] = row, target: int = target) -> Any:
                asked = [columns.decode(base, list(v)) for v in x]
                return np.array([v[target] for v in outputs_of(predict(asked))[1]])

            explainer = shap.KernelExplainer(model, data)
            found = explainer.shap_values(columns.encode([row]), nsamples=SAMPLES, l1_reg=False, silent=True)
            strengths = [float(s) for s in np.asarray(found).reshape(-1)]
            answer["expectedValue"] = float(np.asarray(explainer.expected_value).reshape(-1)[0])
            label = classes[target] if classes is not None else REGRESSION_LABEL
            answer["predictionExplanations"] = _explanations(features, row, strengths, label, options)
        answers.append(answer)
    return answers


def _target(classes: list[str] | None, values: list[float], wanted: Any) -> int:
    """The output explained: the class asked for, else the predicted one (a regression: its value)."""
    if classes is None:
        return 0
    if wanted is not None:
        return classes.index(str(wanted))
    return max(range(len(values)), key=values.__getitem__)


def _prediction(index: int, classes: list[str] | None, values: list[float], target: int) -> dict[str, Any]:
    if classes is None:
        return {"rowId": index, "prediction": values[0], "predictionExplanations": []}
    best = max(range(len(values)), key=values.__getitem__)
    return {
        "rowId": index,
        "prediction": classes[best],
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
