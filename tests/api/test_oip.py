"""The Open Inference Protocol, driven by a real client (tritonclient's HTTP client)."""

import asyncio
import functools
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris

from support.registry import COLUMNS, form

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def tensor(name: str, values, binary: bool = True) -> triton.InferInput:
    array = np.asarray(values)
    datatype = {
        np.dtype("float32"): "FP32",
        np.dtype("float64"): "FP64",
        np.dtype("int64"): "INT64",
        np.dtype("bool"): "BOOL",
    }.get(array.dtype, "BYTES")
    item = triton.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


# tritonclient's HTTP client is synchronous and built on gevent, whose hub belongs to one
# thread: the client is made and used in this one thread, beside the test's event loop.
TRITON_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tritonclient")


async def call(fn, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(TRITON_THREAD, functools.partial(fn, *args, **kwargs))


async def test_tritonclient_against_a_plugin(serve):
    client = await serve("irisbench", workers=2)
    url = str(client.make_url("")).split("://")[1].rstrip("/")
    triton_client = await call(triton.InferenceServerClient, url=url)
    try:
        assert await call(triton_client.is_server_live)
        assert await call(triton_client.is_server_ready)
        assert await call(triton_client.is_model_ready, "irisbench")
        server = await call(triton_client.get_server_metadata)
        assert server["name"] == "deepaas_like" and "binary_tensor_data" in server["extensions"]
        metadata = await call(triton_client.get_model_metadata, "irisbench")
        assert metadata["name"] == "irisbench" and metadata["versions"] == ["1"]
        inputs = {i["name"]: i["datatype"] for i in metadata["inputs"]}
        assert inputs == {
            "sepal_length": "FP64",
            "sepal_width": "FP64",
            "petal_length": "FP64",
            "petal_width": "FP64",
            "top_k": "INT64",
        }
        assert metadata["description"].startswith("RandomForest")  # the DEEPaaS keys are there too
        data = load_iris().data.astype(np.float32)[::15]
        for binary in (True, False):
            result = await call(
                triton_client.infer,
                "irisbench",
                [tensor(name, data[:, i], binary) for i, name in enumerate(FEATURES)],
                parameters={"top_k": 1},
            )
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
            probabilities = result.as_numpy("probabilities")
            assert probabilities.shape == (len(data), 3)
            expected = []
            for row in data:
                body = await (
                    await client.post(
                        "/v2/models/irisbench/predict/", json={**dict(zip(FEATURES, map(float, row))), "top_k": 1}
                    )
                ).json()
                expected.append(body["predictions"])
            assert labels == [e["label"] for e in expected]
            assert np.allclose(
                probabilities,
                [[e["probabilities"][k] for k in ("setosa", "versicolor", "virginica")] for e in expected],
            )
            assert result.get_response()["parameters"]["top_k"] == 1  # passed through (and to every row)
        with pytest.raises(triton.InferenceServerException, match="unknown inputs: colour"):
            await call(triton_client.infer, "irisbench", [tensor("colour", np.array([1.0]))])
    finally:
        await call(triton_client.close)


async def test_tritonclient_against_an_uploaded_model(serve, iris_models):
    client = await serve("echobench")
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    assert (await client.put("/v2/models/forest", data=form(iris_models["pickle"]))).status == 201
    url = str(client.make_url("")).split("://")[1].rstrip("/")
    triton_client = await call(triton.InferenceServerClient, url=url)
    try:
        metadata = await call(triton_client.get_model_metadata, "iris")
        assert metadata["platform"] == "sklearn_joblib" and metadata["versions"] == ["1"]
        assert [i["name"] for i in metadata["inputs"]] == COLUMNS
        assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]
        data = load_iris().data[::10]
        result = await call(
            triton_client.infer,
            "iris",
            [tensor(n, data[:, i]) for i, n in enumerate(COLUMNS)],
            outputs=[triton.InferRequestedOutput("label", binary_data=False)],
        )
        pipeline = iris_models["pipeline"]
        import pandas as pd

        expected = pipeline.predict(pd.DataFrame(data, columns=COLUMNS))
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == list(expected)
        assert result.get_response()["model_version"] == "1"
        # a model with unnamed inputs takes one [N, k] tensor
        rows = await call(triton_client.infer, "forest", [tensor("input", data)], model_version="1")
        assert list(rows.as_numpy("label").astype(str)) == list(iris_models["forest"].predict(data))
        assert await call(triton_client.is_model_ready, "forest", "1")
    finally:
        await call(triton_client.close)


async def test_protocol_errors_are_400_with_an_error_key(serve):
    client = await serve("irisbench", executor="thread")
    cases = [
        (b"{", "not JSON"),
        (json.dumps({"inputs": []}), "non-empty list"),
        (
            json.dumps({"inputs": [{"name": "sepal_length", "shape": [2], "datatype": "FP32", "data": [1]}]}),
            "holds 2 values",
        ),
        (json.dumps({"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP99", "data": [1]}]}), "datatype"),
        (
            json.dumps({"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP32", "data": ["x"]}]}),
            "not a FP32",
        ),
        (
            json.dumps(
                {"inputs": [{"name": n, "shape": [1], "datatype": "FP32", "data": [1.0]} for n in FEATURES[:3]]}
            ),
            "petal_width",
        ),
    ]
    for body, text in cases:
        response = await client.post(
            "/v2/models/irisbench/infer", data=body, headers={"Content-Type": "application/json"}
        )
        answer = await response.json()
        assert response.status == 400 and text in answer["error"], (body, answer)
    spec = await (await client.get("/swagger.json")).json()
    assert "post" in spec["paths"]["/v2/models/irisbench/infer"]


async def test_numpy_answers_become_tensors(serve, plugins):
    """Models answer with numpy values: numbers become numeric tensors, the rest JSON text."""
    plugins.install("numpy-out", fixture="numpy_out")
    client = await serve("numpy-out", executor="thread")
    body = {"inputs": [{"name": "scale", "datatype": "FP64", "shape": [2], "data": [1, 2]}]}
    response = await client.post("/v2/models/numpy-out/infer", json=body)
    assert response.status == 200, await response.text()
    outputs = {o["name"]: o for o in (await response.json())["outputs"]}
    assert outputs["best"] == {"name": "best", "datatype": "INT64", "shape": [2], "data": [1, 1]}
    assert outputs["mean"] == {"name": "mean", "datatype": "FP64", "shape": [2], "data": [0.5, 1.0]}
    assert outputs["missing"]["datatype"] == "FP64" and outputs["missing"]["data"] == [None, None]
    assert outputs["scores"]["datatype"] == "BYTES"  # an array: JSON text, one per row
    assert [json.loads(text) for text in outputs["scores"]["data"]] == [[0.25, 0.75], [0.5, 1.5]]
    assert json.loads(outputs["matrix"]["data"][0]) == [[1.0, 0.0], [0.0, 1.0]]


async def test_a_plugin_has_one_version_everywhere(serve):
    client = await serve("irisbench")
    metadata = await (await client.get("/v2/models/irisbench")).json()
    assert metadata["versions"] == ["1"]
    version = await client.get("/v2/models/irisbench/versions/1")
    body = await version.json()
    assert version.status == 200 and body["version"] == 1 and body["versions"] == ["1"], body
    assert not isinstance(body.get("links"), list)  # the declared ModelVersion schema: not a plugin's document
    assert (await client.get("/v2/models/irisbench/versions/1/ready")).status == 200
    request = {
        "inputs": [
            {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
            for n, v in (("sepal_length", 6.1), ("sepal_width", 2.8), ("petal_length", 4.7), ("petal_width", 1.2))
        ]
    }
    assert (await client.post("/v2/models/irisbench/versions/1/infer", json=request)).status == 200
    assert (await client.post("/v2/models/irisbench/infer", json=request)).status == 200
    for path in ("/v2/models/irisbench/versions/2", "/v2/models/irisbench/versions/2/ready"):
        missing = await client.get(path)
        assert missing.status == 404 and "one version is 1" in (await missing.json())["message"], path
    assert (await client.post("/v2/models/irisbench/versions/2/infer", json=request)).status in (400, 404)
