"""Prediction explanations of plugins: shap in the model's workers, against an initialization."""

import pytest
from sklearn.datasets import load_iris

from support.polling import wait_for

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
INIT = "/v2/models/{}/explanations-initialization/"

# a regression: y = 2x + z (the Shapley value of x is 2 * (x - the background's mean x))
LINEAR = """
from webargs import fields

def get_predict_args():
    return {"x": fields.Float(required=True), "z": fields.Float(required=True)}

def predict(x, z):
    return 2 * x + z

def predict_batch(rows):
    return [2 * r["x"] + r["z"] for r in rows]
"""
WORDS = """
from webargs import fields

def get_predict_args():
    return {"x": fields.Float(required=True)}

def predict(x):
    return "big" if x > 1 else "small"
"""


def iris_rows(step: int) -> list[dict]:
    return [dict(zip(FEATURES, map(float, row))) for row in load_iris().data[::step]]


SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.9, "sepal_width": 3.2, "petal_length": 5.7, "petal_width": 2.3}


async def initialize(client, model: str, rows: list[dict]) -> dict:
    started = await client.post(INIT.format(model), json={"rows": rows})
    job = await started.json()
    assert started.status == 202, job
    assert started.headers["Location"] == INIT.format(model) + job["id"]
    done = await wait_for(client, started.headers["Location"], lambda b: b["status"] not in ("queued", "running"))
    assert done["status"] == "done", done
    return done


async def test_a_virginica_row_is_explained_by_its_petals_and_the_strengths_add_up(serve):
    client = await serve("irisbench")
    assert (await client.get(INIT.format("irisbench"))).status == 404
    refused = await client.post("/v2/models/irisbench/explain", json=VIRGINICA)
    body = await refused.json()
    assert refused.status == 409 and INIT.format("irisbench") in body["message"], body
    job = await initialize(client, "irisbench", iris_rows(10))
    assert job["rowCount"] == 15 and job["features"] == list(FEATURES)

    answer = await client.post("/v2/models/irisbench/explain", json={**VIRGINICA, "maxExplanations": 4})
    body = await answer.json()
    assert answer.status == 200, body
    (row,) = body["data"]
    assert row["prediction"] == "virginica" and row["explainedClass"] == "virginica"
    explanations = row["predictionExplanations"]
    assert [e["feature"] for e in explanations[:2]] == ["petal_length", "petal_width"] or [
        e["feature"] for e in explanations[:2]
    ] == ["petal_width", "petal_length"]
    assert all(e["strength"] > 0 and e["label"] == "virginica" for e in explanations[:2])
    assert explanations[0]["qualitativeStrength"] == "+++"
    assert explanations[0]["featureValue"] == VIRGINICA[explanations[0]["feature"]]
    strengths = [abs(e["strength"]) for e in explanations]
    assert strengths == sorted(strengths, reverse=True)
    probability = {v["label"]: v["value"] for v in row["predictionValues"]}["virginica"]
    assert abs(sum(e["strength"] for e in explanations) - (probability - row["expectedValue"])) < 1e-6

    # the options: in the query string too; the default is three explanations
    fewer = await (await client.post("/v2/models/irisbench/explain?maxExplanations=1", json=VIRGINICA)).json()
    assert len(fewer["data"][0]["predictionExplanations"]) == 1
    default = await (await client.post("/v2/models/irisbench/explain", json=VIRGINICA)).json()
    assert len(default["data"][0]["predictionExplanations"]) == 3


async def test_rows_thresholds_classes_and_bad_rows(serve):
    client = await serve("irisbench")
    await initialize(client, "irisbench", iris_rows(15))
    url = "/v2/models/irisbench/explain"
    body = await (
        await client.post(url, json={"rows": [SETOSA, VIRGINICA], "explainClass": "virginica", "thresholdHigh": 0.5})
    ).json()
    setosa, virginica = body["data"]
    assert setosa["prediction"] == "setosa" and setosa["predictionExplanations"] == []  # p(virginica) = 0: not above
    assert virginica["predictionExplanations"] and virginica["explainedClass"] == "virginica"
    low = await (await client.post(url, json={"rows": [SETOSA, VIRGINICA], "thresholdLow": 0.5})).json()
    assert [r["predictionExplanations"] for r in low["data"]] == [[], []]  # both predicted with p > 0.5

    unknown = await client.post(url, json={**SETOSA, "explainClass": "rose"})
    assert unknown.status == 422 and "rose" in (await unknown.json())["message"]
    bad = await client.post(url, json={"rows": [SETOSA, {**SETOSA, "petal_width": "wide"}]})
    said = await bad.json()
    assert bad.status == 422 and said["message"].startswith("Row 1:"), said
    one = await client.post(url, json={"sepal_length": 5.1})
    assert one.status == 422  # one prediction's arguments, checked as predict checks them
    option = await client.post(url, json={**SETOSA, "maxExplanations": "many"})
    assert option.status == 422 and "maxExplanations" in (await option.json())["message"]


async def test_a_regression_is_explained_exactly(serve, plugins):
    plugins.install("linear", source=LINEAR)
    client = await serve("linear")
    background = [{"x": float(x), "z": float(z)} for x in range(4) for z in (0.0, 10.0)]  # means: x 1.5, z 5
    await initialize(client, "linear", background)
    body = await (await client.post("/v2/models/linear/explain", json={"x": 3.5, "z": 1.0})).json()
    (row,) = body["data"]
    assert row["prediction"] == 8.0 and abs(row["expectedValue"] - 8.0) < 1e-9
    strengths = {e["feature"]: e["strength"] for e in row["predictionExplanations"]}
    assert abs(strengths["x"] - 4.0) < 1e-9 and abs(strengths["z"] + 4.0) < 1e-9
    assert {e["label"] for e in row["predictionExplanations"]} == {"prediction"}


async def test_the_initialization_survives_a_restart_and_can_be_removed(serve, plugins):
    plugins.install("linear", source=LINEAR)
    client = await serve("linear")
    done = await initialize(client, "linear", [{"x": 0.0, "z": 0.0}, {"x": 2.0, "z": 2.0}])
    log = await client.get(INIT.format("linear") + done["id"] + "/log")
    assert log.status == 200 and log.content_type == "text/plain"
    ended = await client.delete(INIT.format("linear") + done["id"])  # its job cancels as model tests' do
    assert ended.status == 409 and "already finished" in (await ended.json())["message"]
    assert (await client.delete(INIT.format("linear") + "0" * 32)).status == 404
    await client.close()

    client = await serve("linear")
    kept = await (await client.get(INIT.format("linear"))).json()
    assert kept["rowCount"] == 2 and kept["features"] == ["x", "z"]
    answer = await client.post("/v2/models/linear/explain", json={"x": 1.0, "z": 1.0})
    assert answer.status == 200, await answer.text()
    assert (await client.delete(INIT.format("linear"))).status == 204
    assert (await client.get(INIT.format("linear"))).status == 404
    assert (await client.delete(INIT.format("linear"))).status == 404
    assert (await client.post("/v2/models/linear/explain", json={"x": 1.0, "z": 1.0})).status == 409


async def test_what_cannot_be_explained_says_why(serve, plugins):
    plugins.install("words", source=WORDS)
    client = await serve("demo", "words")
    refused = await client.post(INIT.format("demo"), json={"rows": [{"text": "a"}]})
    assert refused.status == 422 and "not tabular" in (await refused.json())["message"]
    explain = await client.post("/v2/models/demo/explain", json={})
    assert explain.status == 422 and "not tabular" in (await explain.json())["message"]

    await initialize(client, "words", [{"x": 0.0}, {"x": 2.0}])
    answer = await client.post("/v2/models/words/explain", json={"x": 3.0})
    said = await answer.json()
    assert answer.status == 422 and "neither a number" in said["message"], said
    bad = await client.post(INIT.format("words"), json={"rows": [{"x": 1.0}, {"x": "two"}]})
    assert bad.status == 422 and (await bad.json())["message"].startswith("Row 1:")


async def test_the_inference_protocol_s_request_is_explained_as_tensors(serve):
    client = await serve("irisbench")
    await initialize(client, "irisbench", iris_rows(10))
    rows = [VIRGINICA, SETOSA]
    inputs = [{"name": f, "datatype": "FP64", "shape": [2], "data": [r[f] for r in rows]} for f in FEATURES]
    request = {"id": "r1", "inputs": inputs, "parameters": {"explainClass": "virginica"}}
    answer = await client.post("/v2/models/irisbench/explain", json=request)
    body = await answer.json()
    assert answer.status == 200, body
    assert body["model_name"] == "irisbench" and body["id"] == "r1" and body["parameters"]["features"] == list(FEATURES)
    outputs = {o["name"]: o for o in body["outputs"]}
    strength = outputs["strength"]
    assert strength["datatype"] == "FP64" and strength["shape"] == [2, 4]
    virginica = dict(zip(FEATURES, strength["data"][:4]))
    assert max(virginica, key=virginica.get) in ("petal_length", "petal_width")
    assert outputs["prediction"]["data"] == ["virginica", "setosa"]
    # the same numbers as the JSON answer's
    same = await (await client.post("/v2/models/irisbench/explain", json={**VIRGINICA, "maxExplanations": 4})).json()
    assert {e["feature"]: e["strength"] for e in same["data"][0]["predictionExplanations"]} == pytest.approx(virginica)
    assert outputs["expected_value"]["data"][0] == pytest.approx(same["data"][0]["expectedValue"])
    wrong = await client.post("/v2/models/irisbench/explain", json={"inputs": [{"name": "petals", "datatype": "FP64"}]})
    assert wrong.status == 400 and "error" in await wrong.json()


SLOW = """
import time
from webargs import fields

def get_predict_args():
    return {"x": fields.Float(required=True), "z": fields.Float(required=True)}

def predict_batch(rows):
    time.sleep(0.4)
    return [r["x"] + r["z"] for r in rows]

def predict(x, z):
    return predict_batch([{"x": x, "z": z}])[0]
"""


async def test_an_explanation_that_would_hold_its_worker_too_long_is_refused(serve, plugins):
    """Each row of the Kernel path costs two calls of this model (0.8 s): 40 rows would take
    about 32 s, over the 10 s bound, which the first row tells."""
    plugins.install("slow", source=SLOW)
    client = await serve("slow")
    await initialize(client, "slow", [{"x": 0.0, "z": 0.0}, {"x": 2.0, "z": 2.0}])
    rows = [{"x": float(i), "z": 1.0} for i in range(40)]
    refused = await client.post("/v2/models/slow/explain", json={"rows": rows})
    said = await refused.json()
    assert refused.status == 422 and "the limit is 10 s per request: send at most" in said["message"], said
    assert "40 rows" in said["message"]
    one = await client.post("/v2/models/slow/explain", json={"rows": rows[:1]})
    assert one.status == 200, await one.text()
