"""Prediction explanations of uploaded models: shap's TreeExplainer for scikit-learn trees, its
KernelExplainer for any other model, against an initialization or the version's reference dataset."""

import subprocess
import sys

import joblib
import pandas as pd
import pytest
from openapi_spec_validator import validate
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from test_explain import INIT, SETOSA, VIRGINICA, initialize

from deepaas_like.api import create_app
from support.auth import bearer, mint
from support.helpers import wait_ready
from support.registry import COLUMNS, form, iris_frame

EXPLAIN = "/v2/models/{}/explain"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model files fitted on iris: a forest (named columns, and a bare array), a regressor of
    petal_width by trees, a pipeline without trees; the reference dataset as CSV."""
    folder = tmp_path_factory.mktemp("explained")
    x, y = iris_frame()
    fitted = {
        "forest": RandomForestClassifier(n_estimators=30, random_state=0).fit(x, y),
        "bare": RandomForestClassifier(n_estimators=10, random_state=0).fit(x.to_numpy(), y),
        "boosted": GradientBoostingRegressor(n_estimators=30, random_state=0).fit(x[COLUMNS[:3]], x["petal_width"]),
        "linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y),
    }
    paths = {}
    for name, model in fitted.items():
        joblib.dump(model, folder / f"{name}.joblib")
        paths[name] = folder / f"{name}.joblib"
    sample = x.iloc[::10].assign(species=y[::10])  # 15 rows, and a column no model takes
    return {"fitted": fitted, "paths": paths, "csv": sample.to_csv(index=False).encode(), "sample": sample}


async def upload(client, name, path, headers=None):
    response = await client.put(f"/v2/models/{name}", data=form(path), headers=headers)
    assert response.status == 201, await response.text()


async def explain(client, name, body, path=EXPLAIN, status=200, headers=None):
    response = await client.post(path.format(name), json=body, headers=headers)
    answer = await response.json()
    assert response.status == status, answer
    return answer


def adds_up(row) -> float:
    """How far the row's strengths are from its prediction minus the expected value."""
    if "predictionValues" in row:
        value = {v["label"]: v["value"] for v in row["predictionValues"]}[row["explainedClass"]]
    else:
        value = row["prediction"]
    return abs(sum(e["strength"] for e in row["predictionExplanations"]) - (value - row["expectedValue"]))


async def test_a_forest_s_trees_explain_a_virginica_row_by_its_petals(serve, models):
    client = await serve("echobench")
    await upload(client, "iris", models["paths"]["forest"])
    refused = await explain(client, "iris", VIRGINICA, status=409)
    assert "/v2/models/iris/explanations-initialization/" in refused["message"], refused
    assert "PUT /v2/models/iris/versions/1/dataset" in refused["message"], refused
    stored = await client.put("/v2/models/iris/versions/1/dataset", data=models["csv"])
    assert stored.status == 200, await stored.text()

    body = await explain(client, "iris", {**VIRGINICA, "maxExplanations": 4})
    (row,) = body["data"]
    forest = models["fitted"]["forest"]
    probabilities = forest.predict_proba(pd.DataFrame([VIRGINICA]))[0]
    assert row["prediction"] == "virginica" and row["explainedClass"] == "virginica"
    assert [v["value"] for v in row["predictionValues"]] == pytest.approx(probabilities.tolist())
    explanations = row["predictionExplanations"]
    assert {e["feature"] for e in explanations[:2]} == {"petal_length", "petal_width"}
    assert all(e["strength"] > 0 and e["label"] == "virginica" for e in explanations[:2])
    assert explanations[0]["qualitativeStrength"] == "+++"
    assert explanations[0]["featureValue"] == VIRGINICA[explanations[0]["feature"]]
    assert adds_up(row) < 1e-6
    # the trees' expected value: their mean output over their training data (not the background's)
    assert row["expectedValue"] == pytest.approx(1 / 3, abs=0.05)

    # rows as objects or lists, another class, thresholds: the plugins' options
    many = await explain(
        client,
        "iris",
        {
            "rows": [SETOSA, list(VIRGINICA.values())],
            "explainClass": "setosa",
            "thresholdHigh": 0.5,
            "maxExplanations": 4,
        },
    )
    setosa, virginica = many["data"]
    assert setosa["prediction"] == "setosa" and setosa["explainedClass"] == "setosa" and adds_up(setosa) < 1e-6
    assert virginica["prediction"] == "virginica" and virginica["predictionExplanations"] == []
    assert [r["rowId"] for r in many["data"]] == [0, 1]

    # the versions route, and the protocol's tensors
    versioned = await explain(client, "iris", {**VIRGINICA, "maxExplanations": 4}, "/v2/models/{}/versions/1/explain")
    assert versioned["data"] == body["data"]
    inputs = [{"name": "rows", "datatype": "FP64", "shape": [1, 4], "data": list(VIRGINICA.values())}]
    tensors = await explain(client, "iris", {"inputs": inputs})
    outputs = {o["name"]: o for o in tensors["outputs"]}
    assert tensors["parameters"]["features"] == COLUMNS and outputs["strength"]["shape"] == [1, 4]
    strengths = dict(zip(COLUMNS, outputs["strength"]["data"]))
    assert strengths == pytest.approx({e["feature"]: e["strength"] for e in explanations})
    assert outputs["prediction"]["data"] == ["virginica"]

    # the document: the uploaded model's own explain path, its rows objects or lists
    spec = await (await client.get("/swagger.json")).json()
    validate(spec)
    rows = spec["paths"]["/v2/models/iris/explain"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert rows["properties"]["rows"]["items"]["anyOf"][1]["type"] == "array"

    bad = await explain(client, "iris", {"rows": [SETOSA, [1.0, 2.0]]}, status=422)
    assert bad["message"].startswith("rows[1] has 2 values; the model takes 4: sepal_length"), bad
    unknown = await explain(client, "iris", {**SETOSA, "explainClass": "rose"}, status=422)
    assert "rose" in unknown["message"]


async def test_a_regressor_s_trees_add_up_against_an_initialization(serve, models):
    client = await serve("echobench")
    await upload(client, "width", models["paths"]["boosted"])
    features = COLUMNS[:3]
    sample = models["sample"]
    await initialize(client, "width", sample[features].to_dict("records"))
    rows = sample[features].iloc[:5].to_dict("records")
    body = await explain(client, "width", {"rows": rows, "maxExplanations": 3})
    boosted = models["fitted"]["boosted"]
    expected = boosted.predict(pd.DataFrame(rows))
    for row, value in zip(body["data"], expected):
        assert row["prediction"] == pytest.approx(value) and "predictionValues" not in row
        assert adds_up(row) < 1e-6
        assert {e["label"] for e in row["predictionExplanations"]} == {"prediction"}
    assert [row["expectedValue"] for row in body["data"]] == pytest.approx([boosted.init_.constant_[0][0]] * 5)
    # an uploaded model's initialization gives every one of its inputs
    partial = await client.post(INIT.format("width"), json={"rows": [{c: 1.0 for c in features[:2]}]})
    assert partial.status == 422 and "petal_length" in (await partial.json())["message"]


async def test_a_model_without_trees_is_explained_over_its_predictions(serve, models):
    """A pipeline of a scaler and a logistic regression: the Kernel path, against the reference
    dataset (the expected value is the mean prediction over it); a model of unnamed inputs
    (x0...) is explained the same way (its trees: bare arrays)."""
    client = await serve("echobench")
    await upload(client, "linear", models["paths"]["linear"])
    stored = await client.put("/v2/models/linear/versions/1/dataset", data=models["csv"])
    assert stored.status == 200
    body = await explain(client, "linear", {"rows": [VIRGINICA, SETOSA], "maxExplanations": 4})
    linear = models["fitted"]["linear"]
    background = linear.predict_proba(models["sample"][COLUMNS])
    for row in body["data"]:
        assert adds_up(row) < 1e-6
        index = list(linear.classes_).index(row["explainedClass"])
        assert row["expectedValue"] == pytest.approx(background[:, index].mean())
    virginica = body["data"][0]["predictionExplanations"]
    assert virginica[0]["feature"] in ("petal_length", "petal_width") and virginica[0]["strength"] > 0

    await upload(client, "bare", models["paths"]["bare"])
    names = [f"x{i}" for i in range(4)]
    await initialize(client, "bare", [dict(zip(names, r)) for r in models["sample"][COLUMNS].to_numpy().tolist()])
    listed = await explain(client, "bare", {"rows": [list(VIRGINICA.values())], "maxExplanations": 4})
    (row,) = listed["data"]
    assert adds_up(row) < 1e-6 and {e["feature"] for e in row["predictionExplanations"]} == set(names)
    assert row["predictionExplanations"][0]["feature"] in ("x2", "x3")
    by_name = await explain(client, "bare", dict(zip(names, VIRGINICA.values())))
    assert by_name["data"][0]["predictionExplanations"][:3] == row["predictionExplanations"][:3]


async def test_a_private_model_s_explanations_need_its_role_and_scope(aiohttp_client, make_settings, models, tmp_path):
    data_dir = tmp_path / "data"
    owner = mint(
        data_dir, "--name", "owner", "--scope", "models:write-code", "--scope", "models:predict", "--user", "o"
    )
    other = mint(data_dir, "--name", "other", "--scope", "models:predict", "--user", "someone")
    reader = mint(data_dir, "--name", "reader", "--scope", "models:read", "--user", "o")
    client = await aiohttp_client(create_app(make_settings(model_name=("echobench",), executor="thread", auth=True)))
    await wait_ready(client)
    await upload(client, "iris", models["paths"]["forest"], headers=bearer(owner))
    stored = await client.put("/v2/models/iris/versions/1/dataset", data=models["csv"], headers=bearer(owner))
    assert stored.status == 200, await stored.text()
    assert (await client.post(EXPLAIN.format("iris"), json=VIRGINICA)).status == 401
    assert (await client.post(EXPLAIN.format("iris"), json=VIRGINICA, headers=bearer(other))).status == 404
    assert (await client.post(EXPLAIN.format("iris"), json=VIRGINICA, headers=bearer(reader))).status == 403
    body = await explain(client, "iris", VIRGINICA, headers=bearer(owner))
    assert body["data"][0]["prediction"] == "virginica"


def test_without_shap_in_the_model_s_environment_the_answer_is_a_501(models):
    """The host in a model's own environment without shap: a fresh interpreter where shap cannot import."""
    script = (
        "import sys, joblib; sys.modules['shap'] = None\n"
        "from deepaas_like_frameworks.sklearn_model import SklearnModel\n"
        "from deepaas_like.registry.host import Target, UploadedModel\n"
        "from deepaas_like.errors import NotImplementedByModel\n"
        f"loaded = SklearnModel(joblib.load({str(models['paths']['forest'])!r}))\n"
        f"columns = {tuple(COLUMNS)!r}\n"
        "model = UploadedModel(loaded, None, Target('k', 'm', 'p', 'sklearn', 'joblib', columns))\n"
        "row = dict.fromkeys(columns, 1.0)\n"
        "try:\n"
        "    model.explain(rows=[row], background=[row], features=list(columns), options={})\n"
        "except NotImplementedByModel as exc:\n"
        "    print('501', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("501") and "deepaas_like[explain]" in done.stdout, done.stderr


def test_the_tree_path_is_taken_and_checked_where_the_model_runs(models):
    """In the host itself: a forest (and a scaled forest) by its trees, a pipeline without trees
    by the Kernel path; their strengths add up alike."""
    from deepaas_like_frameworks.sklearn_model import SklearnModel

    from deepaas_like.registry.host import Target, UploadedModel

    x, y = iris_frame()
    scaled = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)).fit(x, y)
    rows = x.iloc[::15].to_dict("records")
    cases = {"forest": models["fitted"]["forest"], "scaled": scaled, "linear": models["fitted"]["linear"]}
    for name, estimator in cases.items():
        model = UploadedModel(
            SklearnModel(estimator), None, Target("k", name, "p", "sklearn", "joblib", tuple(COLUMNS))
        )
        answers = model.explain(
            rows=[VIRGINICA], background=rows, features=COLUMNS[::-1], options={"maxExplanations": 4}
        )
        assert (model._trees is not False) == (name != "linear"), name
        assert adds_up(answers[0]) < 1e-6 and answers[0]["prediction"] == "virginica", name
