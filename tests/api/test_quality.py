"""Know your model: model tests that catch what they claim to, and feature impact."""

import asyncio

import aiohttp
import pytest
from sklearn.datasets import load_iris

from support.polling import wait_for
from support.registry import form

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def iris_rows(count: int = 150) -> list[dict]:
    data = load_iris().data
    return [dict(zip(FEATURES, map(float, row))) for row in data[:count]]


def done(body: dict) -> bool:
    return body["status"] not in ("queued", "running")


async def run_tests(client, model: str, **body) -> dict:
    started = await client.post(f"/v2/models/{model}/tests/", json=body)
    job = await started.json()
    assert started.status == 202, job
    assert started.headers["Location"] == f"/v2/models/{model}/tests/{job['id']}"
    return await wait_for(client, started.headers["Location"], done, timeout=120)


async def test_a_sound_model_passes_every_check(serve):
    client = await serve("irisbench", workers=2)
    result = await run_tests(
        client, "irisbench", rows=iris_rows(30), configuration={"longRunningService": "fail", "performance": "warn"}
    )
    assert result["status"] == "done" and result["overallStatus"] == "succeeded", result
    statuses = {name: check["status"] for name, check in result["testingStatus"].items()}
    assert statuses == {
        "errorCheck": "succeeded",
        "sideEffects": "succeeded",
        "nullValueImputation": "succeeded",
        "longRunningService": "succeeded",
        "performance": "succeeded",
    }
    assert "p50" in result["testingStatus"]["performance"]["message"]
    assert "refused by validation (422)" in result["testingStatus"]["nullValueImputation"]["message"]
    log = await (await client.get(f"/v2/models/irisbench/tests/{result['id']}/log")).text()
    assert "errorCheck: started" in log and "overall: succeeded" in log
    tail = await (await client.get(f"/v2/models/irisbench/tests/{result['id']}/log/tail?lines=2")).text()
    assert tail.splitlines()[-1].endswith("overall: succeeded") and len(tail.splitlines()) == 2


async def test_each_failing_fixture_is_caught_by_its_check(serve, plugins):
    plugins.install("nulls", fixture="raises_on_null")
    plugins.install("stateful")
    plugins.install("leaky")
    client = await serve("nulls", "stateful", "leaky")
    rows = [{"x": float(i)} for i in range(10)]
    expected = {
        "nulls": (
            "nullValueImputation",
            "the model fails when a feature is null",
            [{"x": 2.0, "y": 3.0}, {"x": 1.0, "y": 5.0}],
        ),
        "stateful": ("sideEffects", "differ between a batch and one by one", rows),
        "leaky": ("longRunningService", "memory grew by", rows),
    }
    for model, (check, text, sample) in expected.items():
        result = await run_tests(
            client,
            model,
            rows=sample,
            configuration={
                "sideEffects": "fail",
                "nullValueImputation": "fail",
                "longRunningService": "fail",
                "performance": "skip",
            },
        )
        assert result["overallStatus"] == "failed", (model, result["testingStatus"])
        assert result["testingStatus"][check]["status"] == "failed", (model, result["testingStatus"])
        assert text in result["testingStatus"][check]["message"], (model, result["testingStatus"][check])
        others = {name for name, c in result["testingStatus"].items() if c["status"] == "failed"}
        assert others == {check}, (model, result["testingStatus"])
    warned = await run_tests(client, "stateful", rows=rows, configuration={"sideEffects": "warn"})
    assert warned["testingStatus"]["sideEffects"]["status"] == "warning" and warned["overallStatus"] == "warning"


async def test_tests_are_cancelled_and_bad_requests_are_422(serve, plugins):
    plugins.install("slow")
    client = await serve("irisbench", "demo", "slow")
    started = await client.post(
        "/v2/models/slow/tests/", json={"rows": [{"seconds": 0.05}], "configuration": {"longRunningService": "fail"}}
    )
    job = await started.json()
    await asyncio.sleep(1.0)
    cancelled = await client.delete(f"/v2/models/slow/tests/{job['id']}")
    body = await cancelled.json()
    assert cancelled.status == 200 and body["status"] == "cancelled"
    assert "canceled" in {c["status"] for c in body["testingStatus"].values()}
    cases = [
        ({}, "Give sample rows"),
        ({"rows": [{"sepal_length": [1, 2]}]}, "not a scalar"),
        ({"rows": iris_rows(2), "configuration": {"errorCheck": "maybe"}}, "Invalid configuration"),
        ({"rows": iris_rows(2), "configuration": {"speed": "fail"}}, "speed"),
        ({"rows": [{"petal_length": "long"}]}, "petal_length"),
        ({"rows": iris_rows(2), "configuration": 0}, "configuration must be an object"),
        ({"rows": iris_rows(2), "configuration": None}, "configuration must be an object"),
        ({"rows": iris_rows(2), "rowCount": None}, "rowCount must be a positive integer"),
    ]
    for body, text in cases:
        response = await client.post("/v2/models/irisbench/tests/", json=body)
        assert response.status == 422 and text in (await response.json())["message"], body
    not_tabular = await client.post("/v2/models/demo/feature-impact/", json={"rows": [{"scale": 1.0}]})
    assert not_tabular.status == 422 and "not tabular" in (await not_tabular.json())["message"]


async def test_rows_from_a_csv_and_an_uploaded_versions_reference_dataset(serve, iris_models, tmp_path):
    client = await serve("echobench")
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    csv = (
        "sepal_length,sepal_width,petal_length,petal_width\n"
        + "\n".join(",".join(str(v) for v in row.values()) for row in iris_rows(20))
        + "\n"
    )
    stored = await client.put(
        "/v2/models/iris/versions/1/dataset", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert stored.status == 200 and (await stored.json())["rows"] == 20
    assert (await (await client.get("/v2/models/iris/versions/1/dataset")).read()).decode() == csv
    result = await run_tests(client, "iris")  # no rows: the reference dataset
    assert result["overallStatus"] == "succeeded" and result["args"]["rows"] == 20
    data = aiohttp.FormData()
    data.add_field("data", csv.encode(), filename="rows.csv", content_type="text/csv")
    data.add_field("configuration", '{"performance": "skip"}')
    started = await client.post("/v2/models/iris/tests/", data=data)
    assert started.status == 202
    from_csv = await wait_for(client, started.headers["Location"], done, timeout=120)
    assert from_csv["testingStatus"]["performance"]["status"] == "skipped"
    assert from_csv["overallStatus"] == "succeeded"


@pytest.mark.slow
async def test_feature_impact_of_irisbench_ranks_petals_first_and_repeats_with_its_seed(serve):
    client = await serve("irisbench", workers=2)
    rows = iris_rows()
    results = []
    for _ in range(2):
        started = await client.post(
            "/v2/models/irisbench/feature-impact/", json={"rows": rows, "seed": 7, "rowCount": 100}
        )
        assert started.status == 202
        results.append(await wait_for(client, started.headers["Location"], done, timeout=120))
    first, second = results
    assert first["status"] == "done", first
    impacts = {item["featureName"]: item for item in first["featureImpacts"]}
    assert first["count"] == 4 and first["rowCount"] == 100 and first["ranRedundancyDetection"] is False
    assert max(item["impactNormalized"] for item in impacts.values()) == 1.0
    assert min(impacts["petal_length"]["impactUnnormalized"], impacts["petal_width"]["impactUnnormalized"]) > max(
        impacts["sepal_length"]["impactUnnormalized"], impacts["sepal_width"]["impactUnnormalized"]
    )
    assert first["featureImpacts"] == second["featureImpacts"]  # the same seed, the same numbers
    assert first["progress"] == 1.0
    plot = await client.get(f"/v2/models/irisbench/feature-impact/{first['id']}/plot.png")
    image = await plot.read()
    assert plot.content_type == "image/png" and image.startswith(b"\x89PNG") and len(image) > 5000
    assert (await client.get("/v2/models/irisbench/feature-impact/")).status == 200


async def test_feature_impact_of_an_uploaded_model(serve, iris_models):
    client = await serve("echobench")
    assert (await client.put("/v2/models/forest", data=form(iris_models["pickle"]))).status == 201
    rows = [{f"x{i}": float(v) for i, v in enumerate(row)} for row in load_iris().data]
    started = await client.post("/v2/models/forest/feature-impact/", json={"rows": rows, "seed": 1})
    result = await wait_for(client, started.headers["Location"], done, timeout=120)
    ranked = [item["featureName"] for item in result["featureImpacts"]]
    assert set(ranked[:2]) == {"x2", "x3"}  # the petals, as for irisbench (unnamed inputs here)
