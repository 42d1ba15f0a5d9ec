"""The worker side of prediction explanations: shap over a plugin's own predictions."""

import types

import pytest

from deepaas_like.engine.adapter import ModelAdapter
from deepaas_like.engine.explainer import qualitative
from deepaas_like.errors import ArgumentError


def linear(**row):
    return 3 * row["a"] - row["b"]


def classifier(**row):
    p = 0.9 if row["a"] > 1 else 0.2
    return {"label": "yes" if p > 0.5 else "no", "probabilities": {"no": 1 - p, "yes": p}}


def request(rows, **options):
    background = [{"a": 0.0, "b": 0.0}, {"a": 2.0, "b": 4.0}]
    return {
        "rows": rows,
        "background": background,
        "features": ["a", "b"],
        "options": {"maxExplanations": 3, **options},
    }


def test_a_regression_s_strengths_are_its_shapley_values():
    adapter = ModelAdapter("linear", types.SimpleNamespace(predict=linear))
    (row,) = adapter.call("explain", request([{"a": 3.0, "b": 1.0}]))
    assert row["prediction"] == 8.0 and row["expectedValue"] == pytest.approx(1.0)  # mean of 0 and 2
    strengths = {e["feature"]: e["strength"] for e in row["predictionExplanations"]}
    assert strengths == pytest.approx({"a": 3 * (3.0 - 1.0), "b": -(1.0 - 2.0)})
    assert [e["qualitativeStrength"] for e in row["predictionExplanations"]] == ["+++", "+"]


def test_a_classifier_explains_the_predicted_class_or_the_one_asked_for():
    adapter = ModelAdapter("classifier", types.SimpleNamespace(predict=classifier))
    (row,) = adapter.call("explain", request([{"a": 3.0, "b": 1.0}]))
    assert row["prediction"] == "yes" and row["explainedClass"] == "yes"
    assert sum(e["strength"] for e in row["predictionExplanations"]) == pytest.approx(0.9 - row["expectedValue"])
    (other,) = adapter.call("explain", request([{"a": 3.0, "b": 1.0}], explainClass="no", thresholdLow=0.5))
    assert other["explainedClass"] == "no" and other["predictionExplanations"][0]["strength"] < 0
    with pytest.raises(ArgumentError, match="not a class"):
        adapter.call("explain", request([{"a": 3.0, "b": 1.0}], explainClass="maybe"))


def test_a_model_with_its_own_explain_answers_itself():
    own = types.SimpleNamespace(predict=linear, explain=lambda rows, background, features, options: ["mine"])
    assert ModelAdapter("own", own).call("explain", request([{"a": 1.0, "b": 1.0}])) == ["mine"]


def test_qualitative_strength_is_relative_to_the_row_s_largest():
    assert [qualitative(s, 1.0) for s in (1.0, 0.5, 0.1, -0.8, -0.3, -0.2, 0.0)] == [
        "+++",
        "++",
        "+",
        "---",
        "--",
        "-",
        "+",
    ]


def test_without_shap_where_the_model_runs_the_answer_is_a_501_saying_so():
    """A model's own environment without shap: run in a fresh interpreter where shap cannot import."""
    import subprocess
    import sys

    script = (
        "import sys, types; sys.modules['shap'] = None\n"  # what `import shap` meets where it is not installed
        "from deepaas_like.engine.adapter import ModelAdapter\n"
        "from deepaas_like.errors import NotImplementedByModel\n"
        "adapter = ModelAdapter('m', types.SimpleNamespace(predict=lambda **row: 1.0))\n"
        "try:\n"
        "    adapter.call('explain', {'rows': [{'a': 1.0}], 'background': [{'a': 0.0}], 'features': ['a']})\n"
        "except NotImplementedByModel as exc:\n"
        "    print(exc.status, exc.message)\n"
    )
    said = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert said.stdout.startswith("501 Prediction explanations need shap where the model runs"), said.stderr
    assert "add shap to its requirements" in said.stdout
