"""The model registry: upload real model files, serve them, version them, keep them."""

import asyncio
import hashlib

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from deepaas_like.api import create_app
from deepaas_like.api.keys import MODELS
from deepaas_like.registry.artifacts import ArtifactStore
from deepaas_like.registry.records import VersionStatus
from support.helpers import wait_ready
from support.model_files import build_keras_files, build_torch_files
from support.registry import COLUMNS, ROW, form, iris_frame

pytestmark = pytest.mark.stores("sqlite", "postgresql")  # the same suite on each store

VIRGINICA = {"sepal_length": 6.9, "sepal_width": 3.1, "petal_length": 5.4, "petal_width": 2.1}


async def upload(client, name, path, expect=(200, 201), **fields):
    response = await client.put(f"/v2/models/{name}", data=form(path, **fields))
    body = await response.json()
    assert response.status in ((expect,) if isinstance(expect, int) else expect), body
    return body


@pytest.fixture
def registry_app(aiohttp_client, make_settings):
    async def start(**overrides):
        settings = make_settings(model_name=("echobench",), executor="thread", **overrides)
        client = await aiohttp_client(create_app(settings))
        await wait_ready(client)
        return client

    return start


async def test_upload_then_predict_like_the_model_in_process(registry_app, iris_models):
    client = await registry_app()
    created = await upload(client, "iris", iris_models["joblib"], expect=201, description="Iris pipeline")
    assert created["source"] == "upload" and created["current_version"] == 1
    version = created["version"]
    assert version["status"] == "ready" and version["library"] == "sklearn" and version["filetype"] == "joblib"
    assert version["sha256"] == hashlib.sha256(iris_models["joblib"].read_bytes()).hexdigest()
    assert version["library_versions"]["scikit-learn"]
    assert [c["name"] for c in version["signature"]["columns"]] == COLUMNS
    pipeline = iris_models["pipeline"]
    expected = pipeline.predict(pd.DataFrame([ROW]))[0]
    probabilities = pipeline.predict_proba(pd.DataFrame([ROW]))[0]
    for response in (
        await client.post("/v2/models/iris/predict/", json=ROW),
        await client.post("/v2/models/iris/predict/", data={k: str(v) for k, v in ROW.items()}),
        await client.post("/v2/models/iris/predict/?" + "&".join(f"{k}={v}" for k, v in ROW.items())),
    ):
        body = await response.json()
        assert response.status == 200, body
        assert body["status"] == "OK" and body["predictions"]["label"] == expected
        got = body["predictions"]["probabilities"]
        assert got.keys() == {str(c) for c in pipeline.classes_}
        assert np.allclose([got[str(c)] for c in pipeline.classes_], probabilities)
    many = await client.post("/v2/models/iris/predict/", json={"rows": [ROW, VIRGINICA]})
    labels = [p["label"] for p in (await many.json())["predictions"]]
    assert labels == list(pipeline.predict(pd.DataFrame([ROW, VIRGINICA])))
    bad = await client.post("/v2/models/iris/predict/", json={**ROW, "petal_width": "wide"})
    assert bad.status == 422 and "petal_width" in (await bad.json())["errors"]
    missing = await client.post("/v2/models/iris/predict/", json={"sepal_length": 1})
    assert missing.status == 422 and "petal_width" in (await missing.json())["errors"]
    bad_rows = await client.post("/v2/models/iris/predict/", json={"rows": [ROW, {"sepal_length": 1}]})
    assert bad_rows.status == 422 and "1" in (await bad_rows.json())["errors"]["rows"]
    listed = await (await client.get("/v2/models/")).json()
    assert [(m["name"], m["source"]) for m in listed["models"]] == [("echobench", "plugin"), ("iris", "upload")]
    spec = await (await client.get("/swagger.json")).json()
    properties = spec["paths"]["/v2/models/iris/predict/"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]["properties"]
    assert list(properties) == COLUMNS


async def test_a_version_is_ready_only_once_it_is_current(registry_app, iris_models):
    """What loading a version found and the model's current version change in one step:
    whenever the store is told a version is ready, the model the catalog answers with
    already serves it (a client polling the version never sees it ready and not current)."""
    client = await registry_app()
    registry = client.app[MODELS].uploads
    seen = []
    save = registry.store.save_version

    async def watched(version, *fields):  # the real store, watched
        if "status" in fields and version.status is VersionStatus.READY:
            seen.append((version.number, registry.catalog.record(version.model).current_version))
        return await save(version, *fields)

    registry.store.save_version = watched
    await upload(client, "iris", iris_models["joblib"], expect=201)
    await upload(client, "iris", iris_models["pickle"], expect=200)
    assert seen == [(1, 1), (2, 2)]
    model = await (await client.get("/v2/models/iris")).json()
    assert model["current_version"] == 2


async def test_unnamed_inputs_take_rows_as_lists(registry_app, iris_models):
    client = await registry_app()
    await upload(client, "forest", iris_models["pickle"], expect=201)
    forest = iris_models["forest"]
    values = list(VIRGINICA.values())
    single = await client.post("/v2/models/forest/predict/", json={f"x{i}": v for i, v in enumerate(values)})
    assert (await single.json())["predictions"]["label"] == forest.predict([values])[0]
    rows = await client.post("/v2/models/forest/predict/", json={"rows": [values, list(ROW.values())]})
    assert [p["label"] for p in (await rows.json())["predictions"]] == list(
        forest.predict([values, list(ROW.values())])
    )
    wrong = await client.post("/v2/models/forest/predict/", json={"rows": [[1, 2]]})
    assert wrong.status == 422


async def test_versions_rollback_archive_restore_purge_and_download(registry_app, iris_models, tmp_path):
    client = await registry_app()
    await upload(client, "iris", iris_models["joblib"], expect=201)
    second = await upload(client, "iris", iris_models["pickle"], expect=200)
    assert second["current_version"] == 2 and second["version"]["filetype"] == "pickle"
    versions = (await (await client.get("/v2/models/iris/versions/")).json())["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [(1, "ready"), (2, "ready")]
    # version 2 has unnamed inputs: the current version decides the form
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 422
    one = await client.post("/v2/models/iris/versions/1/predict/", json=ROW)
    assert one.status == 200
    rolled = await client.patch("/v2/models/iris", json={"current_version": 1, "is_public": True})
    assert rolled.status == 200 and (await rolled.json())["current_version"] == 1
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 200
    download = await client.get("/v2/models/iris/versions/2/download")
    data = await download.read()
    assert data == iris_models["pickle"].read_bytes()
    assert download.headers["Content-Disposition"] == 'attachment; filename="forest.pkl"'
    assert download.headers["X-Content-SHA256"] == hashlib.sha256(data).hexdigest()
    archived = await client.delete("/v2/models/iris")
    assert archived.status == 200 and (await archived.json())["archived"] is True
    gone = await client.post("/v2/models/iris/predict/", json=ROW)
    assert gone.status == 404 and "archived" in (await gone.json())["message"]
    assert [m["name"] for m in (await (await client.get("/v2/models/?deleted=true")).json())["models"]] == ["iris"]
    assert (await client.post("/v2/models/iris/restore")).status == 200
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 200
    purged = await client.delete("/v2/models/iris?purge=true")
    assert purged.status == 200
    assert (await client.get("/v2/models/iris/")).status == 404
    assert not list((tmp_path / "data" / "artifacts" / "sha256").rglob("*/*")), "the files went with it"


@pytest.mark.slow
async def test_everything_survives_a_restart(registry_app, iris_models):
    first = await registry_app()
    await upload(first, "iris", iris_models["joblib"], expect=201)
    await upload(first, "iris", iris_models["joblib"], expect=200)
    await first.patch("/v2/models/iris", json={"current_version": 1, "description": "kept"})
    answer = await (await first.post("/v2/models/iris/predict/", json=ROW)).json()
    await first.close()
    second = await registry_app()
    document = await (await second.get("/v2/models/iris/")).json()
    assert (document["current_version"], document["version_count"], document["description"]) == (1, 2, "kept")
    assert document["versions"] == ["1", "2"]  # the Open Inference Protocol's list of versions
    assert document["last_predict_at"] is not None
    again = await (await second.post("/v2/models/iris/predict/", json=ROW)).json()
    assert again == answer


async def test_a_corrupt_file_is_an_error_version_and_the_current_one_keeps_serving(
    registry_app, iris_models, tmp_path
):
    client = await registry_app()
    await upload(client, "iris", iris_models["joblib"], expect=201)
    corrupt = tmp_path / "broken.joblib"
    corrupt.write_bytes(iris_models["joblib"].read_bytes()[:200])
    body = await upload(client, "iris", corrupt, expect=422)
    assert "does not load" in body["message"] and body["version"]["status"] == "error"
    assert body["version"]["version"] == 2 and body["current_version"] == 1
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 200
    switch = await client.patch("/v2/models/iris", json={"current_version": 2})
    assert switch.status == 409 and "only a ready version can serve" in (await switch.json())["message"]


async def test_bad_uploads_are_clear_4xx_and_leave_nothing(registry_app, iris_models, tmp_path):
    client = await registry_app(max_upload_size=4096)
    wrong = await client.put("/v2/models/iris", data=form(iris_models["joblib"], filetype="onnx"))
    assert wrong.status == 422 and "not a onnx file" in (await wrong.json())["message"]
    for bad in ("Iris", "-iris", "iris_2", "x" * 64):
        response = await client.put(f"/v2/models/{bad}", data=form(iris_models["joblib"]))
        assert response.status == 422 and "DNS" in (await response.json())["message"], bad
    plugin = await client.put("/v2/models/echobench", data=form(iris_models["joblib"]))
    assert plugin.status == 409 and "plugin" in (await plugin.json())["message"]
    unknown = tmp_path / "notes.txt"
    unknown.write_bytes(b"just some text")
    guess = await client.put("/v2/models/notes", data=form(unknown))
    assert guess.status == 422 and "filetype" in (await guess.json())["errors"]
    big = tmp_path / "big.joblib"
    big.write_bytes(b"\x80" + b"0" * 10000)
    too_large = await client.put("/v2/models/big", data=form(big))
    assert too_large.status == 413 and "--max-upload-size" in (await too_large.json())["message"]
    assert (await client.get("/v2/models/big/")).status == 404
    artifacts = tmp_path / "data" / "artifacts"
    assert not list((artifacts / "sha256").rglob("*/*"))
    assert not [p for p in (artifacts / "tmp").rglob("*") if p.is_file()]


async def test_a_replica_starting_keeps_another_replicas_upload_in_flight(tmp_path):
    """Replicas share the artifact directory: each stages under its own tmp/<node>, and a
    file reaches the shared content-addressed place only when it is committed."""
    first, second = ArtifactStore(tmp_path, 1 << 20), ArtifactStore(tmp_path, 1 << 20)
    first.prepare(node="host:aaa")

    async def chunks():
        yield b"model bytes"

    staged = await first.stage(chunks())
    assert staged.staged.exists() and not first.path(staged.sha256).exists()
    second.prepare(node="host:bbb")  # a second replica starts and clears what *it* left
    committed = first.commit(staged)
    assert committed.staged is None and first.path(staged.sha256).read_bytes() == b"model bytes"
    refused = await second.stage(chunks())
    second.discard(refused)
    assert not refused.staged.exists() and first.path(staged.sha256).exists()
    assert hashlib.sha256(b"model bytes").hexdigest() == staged.sha256


async def test_concurrent_uploads_are_numbered_without_gaps(registry_app, iris_models):
    client = await registry_app()
    answers = await asyncio.gather(*(client.put("/v2/models/iris", data=form(iris_models["joblib"])) for _ in range(6)))
    assert sorted(r.status for r in answers) == [200] * 5 + [201]
    versions = (await (await client.get("/v2/models/iris/versions/")).json())["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5, 6]


async def test_predictions_during_version_switches_never_fail(registry_app, iris_models):
    client = await registry_app()
    await upload(client, "iris", iris_models["joblib"], expect=201)
    await upload(client, "iris", iris_models["joblib"], expect=200)
    stop = asyncio.Event()

    async def switch():
        number = 1
        while not stop.is_set():
            number = 3 - number
            assert (await client.patch("/v2/models/iris", json={"current_version": number})).status == 200
            await asyncio.sleep(0.005)

    switching = asyncio.ensure_future(switch())
    responses = await asyncio.gather(*(client.post("/v2/models/iris/predict/", json=ROW) for _ in range(200)))
    stop.set()
    await switching
    assert [r.status for r in responses] == [200] * 200


async def test_write_routes_are_refused_off_loopback_without_enable_uploads(registry_app, iris_models):
    client = await registry_app(listen_ip="0.0.0.0")
    refused = await client.put("/v2/models/iris", data=form(iris_models["joblib"]))
    assert refused.status == 403 and "--enable-uploads" in (await refused.json())["message"]
    assert (
        await client.post("/v2/models/echobench/predict/?sepal_length=1&sepal_width=1&petal_length=1&petal_width=1")
    ).status == 200  # predict stays open


async def test_neurodeploy_routes(registry_app, iris_models):
    client = await registry_app()
    put = await client.put(
        "/ml-models/iris?lib=Scikit-learn&filetype=Joblib&is_public=true",  # as its docs spell them
        data=iris_models["joblib"].read_bytes(),
    )
    body = await put.json()
    assert put.status == 200 and (body["model_name"], body["model_type"], body["persistence_type"]) == (
        "iris",
        "scikit-learn",
        "joblib",
    ), body
    for lib, filetype in (("scikit-learn", "pickle"), ("SKLEARN", "Pickle"), ("Scikit-Learn", "PKL")):
        again = await client.put(
            f"/ml-models/iris?lib={lib}&filetype={filetype}", data=iris_models["pickle"].read_bytes()
        )
        assert again.status == 200, (lib, filetype, await again.text())
    native = await client.put(
        "/v2/models/native", data=form(iris_models["joblib"], library="Scikit-learn", filetype="JOBLIB")
    )
    assert native.status == 201 and (await native.json())["library"] == "sklearn"
    listed = await (await client.get("/ml-models")).json()
    assert listed["models"][0]["model_name"] == "iris" and listed["models"][0]["updated_at"] is None
    assert listed["models"][0]["library"] == "scikit-learn"
    assert (await (await client.get("/ml-models?used=true")).json())["models"] == []
    predicted = await client.post("/v2/models/iris/predict/", json={"rows": [list(ROW.values())]})
    assert predicted.status == 200, await predicted.text()
    one = await (await client.get("/ml-models/iris")).json()
    assert one["is_public"] is True and one["updated_at"] is not None
    deleted = await client.delete("/ml-models/iris")
    assert (await deleted.json()) == {"message": "deleted model iris"}
    assert (await (await client.get("/ml-models?deleted=true")).json())["models"][0]["model_name"] == "iris"


@pytest.fixture(scope="module")
def other_files(tmp_path_factory, iris_models):
    """Keras, TorchScript, torch.export and ONNX files, with what the models answer in process."""
    from skl2onnx import to_onnx

    where = tmp_path_factory.mktemp("others")
    keras_files = build_keras_files(where)
    torch_files = build_torch_files(where)
    forest = iris_models["forest"]
    x = load_iris().data.astype(np.float32)
    (where / "forest.onnx").write_bytes(
        to_onnx(forest, x[:1], options={id(forest): {"zipmap": False}}).SerializeToString()
    )
    return {"keras": keras_files, "torch": torch_files, "onnx": where / "forest.onnx"}


@pytest.mark.parametrize("name, filetype", [("softmax.keras", "keras"), ("softmax.h5", "h5")])
@pytest.mark.slow
async def test_keras_files_answer_like_keras(registry_app, other_files, name, filetype):
    client = await registry_app()
    keras_files = other_files["keras"]
    await upload(client, "net", keras_files["dir"] / name, expect=201)
    rows = keras_files["x"].tolist()
    body = await (await client.post("/v2/models/net/predict/", json={"rows": rows})).json()
    expected = keras_files["softmax"]
    assert [p["label"] for p in body["predictions"]] == expected.argmax(axis=1).tolist()
    got = np.array([[p["probabilities"][str(c)] for c in range(3)] for p in body["predictions"]])
    assert np.allclose(got, expected, atol=1e-5)
    single = await client.post("/v2/models/net/predict/", json={f"x{i}": v for i, v in enumerate(rows[0])})
    assert (await single.json())["predictions"]["label"] == int(expected[0].argmax())
    unsafe = await client.put("/v2/models/unsafe", data=form(keras_files["dir"] / f"lambda.{filetype}"))
    assert unsafe.status == 422 and "Lambda" in (await unsafe.json())["message"]


@pytest.mark.parametrize("name", ["scripted.pt", "dynamic.pt2"])
@pytest.mark.slow
async def test_torch_files_answer_like_torch(registry_app, other_files, name):
    client = await registry_app()
    torch_files = other_files["torch"]
    created = await upload(
        client,
        "net",
        torch_files["dir"] / name,
        expect=201,
        **({"filetype": "torchscript"} if name.endswith(".pt") else {}),
    )
    assert created["version"]["library"] == "pytorch"
    body = await (await client.post("/v2/models/net/predict/", json={"rows": torch_files["x"].tolist()})).json()
    got = np.array([p["output"] for p in body["predictions"]])
    assert np.allclose(got, torch_files["expected"], atol=1e-6)


async def test_onnx_files_answer_like_the_model_they_came_from(registry_app, other_files, iris_models):
    client = await registry_app()
    await upload(client, "forest", other_files["onnx"], expect=201)
    forest = iris_models["forest"]
    rows = load_iris().data[::10].tolist()
    body = await (await client.post("/v2/models/forest/predict/", json={"rows": rows})).json()
    assert [p["label"] for p in body["predictions"]] == list(forest.predict(np.array(rows)))


async def test_optimize_onnx_serves_the_graph_when_it_agrees(registry_app, iris_models):
    client = await registry_app()
    created = await upload(client, "forest", iris_models["pickle"], expect=201, optimize="onnx")
    optimization = created["version"]["optimization"]
    assert optimization["serving"] == "onnx", optimization
    assert optimization["labels_agree"] == 1.0 and optimization["max_probability_difference"] <= 1e-4
    assert optimization["probe_rows"] > 0 and len(optimization["onnx_sha256"]) == 64
    rows = load_iris().data[::7].tolist()
    body = await (await client.post("/v2/models/forest/predict/", json={"rows": rows})).json()
    assert [p["label"] for p in body["predictions"]] == list(iris_models["forest"].predict(np.array(rows)))
    download = await client.get("/v2/models/forest/versions/1/download")
    assert await download.read() == iris_models["pickle"].read_bytes()  # the upload, not the graph


async def test_many_models_share_few_workers_with_an_lru(registry_app, tmp_path):
    client = await registry_app(max_loaded_models=2, registry_workers=1)
    x, y = iris_frame()
    for strength, name in enumerate(("a", "b", "c"), start=1):  # three models, three files
        joblib.dump(LogisticRegression(C=strength, max_iter=500).fit(x, y), tmp_path / f"{name}.joblib")
        await upload(client, name, tmp_path / f"{name}.joblib", expect=201)

    async def registry_metrics() -> dict[str, float]:
        text = await (await client.get("/metrics")).text()
        return {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line.startswith("deepaas_registry_")
        }

    before = await registry_metrics()  # each upload loaded its file once, to learn its signature
    for name in ("a", "b", "c", "a"):  # a, b, c (a goes), a again (b goes)
        assert (await client.post(f"/v2/models/{name}/predict/", json=ROW)).status == 200
    after = await registry_metrics()
    assert after["deepaas_registry_loaded_models"] == 2 and after["deepaas_registry_models"] == 3
    assert after["deepaas_registry_loads_total"] - before["deepaas_registry_loads_total"] >= 2
    assert after["deepaas_registry_evictions_total"] > before["deepaas_registry_evictions_total"]
    assert after["deepaas_registry_load_seconds_count"] == after["deepaas_registry_loads_total"]
    ready = await (await client.get("/v2/models/a/ready")).json()
    assert ready["executor"] == "shared" and ready["workers"] == 1


async def test_shared_workers_start_with_the_server_and_import_scikit_learn_ahead(registry_app, iris_models):
    from deepaas_like.api.keys import MODELS

    client = await registry_app(registry_preload=True)
    pool = client.server.app[MODELS].uploads.serving.pool
    for _ in range(600):  # started in the background, before any upload
        if pool.ready:
            break
        await asyncio.sleep(0.1)
    assert pool.ready and not list(client.server.app[MODELS].uploads.models())
    (pid,) = pool.worker_pids()
    with open(f"/proc/{pid}/maps") as maps:
        assert "sklearn" in maps.read(), "scikit-learn's extensions are loaded in the worker"
    await upload(client, "iris", iris_models["joblib"], expect=201)
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 200


@pytest.mark.slow
async def test_an_answer_that_is_not_a_number_is_a_422_naming_the_inputs(registry_app, iris_models):
    client = await registry_app()
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]))).status == 201
    extreme = {**ROW, "sepal_length": 1e308, "petal_width": -1e308}
    answer = await client.post("/v2/models/iris/predict/", json=extreme)
    body = await answer.json()
    assert answer.status == 422, body
    assert "not a number" in body["message"] and "sepal_length=1e+308" in body["message"], body
    assert "petal_width=-1e+308" in body["message"] and "sepal_width" not in body["message"].split("take:")[-1]
    rows = await client.post("/v2/models/iris/predict/", json={"rows": [ROW, extreme]})
    assert rows.status == 422
    infer = await client.post(
        "/v2/models/iris/infer",
        json={
            "inputs": [
                {"name": name, "shape": [1], "datatype": "FP64", "data": [value]} for name, value in extreme.items()
            ]
        },
    )
    assert infer.status == 400 and "not a number" in (await infer.json())["error"]
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 200  # the model still serves


@pytest.mark.slow
async def test_every_way_of_predicting_is_bookkept_alike(registry_app, iris_models):
    """last_predict (Neurodeploy's `used`) moves whichever way the model is asked: here, asynchronously."""
    client = await registry_app()
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]))).status == 201
    assert (await (await client.get("/ml-models?used=true")).json())["models"] == []
    job = await (await client.post("/v2/models/iris/predictions/", json=ROW)).json()
    for _ in range(100):
        done = await (await client.get(f"/v2/models/iris/predictions/{job['id']}")).json()
        if done["status"] == "done":
            break
        await asyncio.sleep(0.05)
    assert done["status"] == "done", done
    used = (await (await client.get("/ml-models?used=true")).json())["models"]
    assert [m["model_name"] for m in used] == ["iris"] and used[0]["updated_at"] is not None
