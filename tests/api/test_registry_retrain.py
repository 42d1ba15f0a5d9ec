"""Retraining uploaded scikit-learn models: POST /v2/models/{name}/train/ with rows and a target
fits a clone of a version's estimator in a contained process of its own, and the fitted model
becomes the model's next version."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pickle
import time
from pathlib import Path

import aiohttp
import jwt
import numpy as np
import pandas as pd
import pytest
import sklearn
from aiohttp import web
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from deepaas_like.api import create_app
from deepaas_like.api.keys import MODELS
from deepaas_like.containment import landlock
from deepaas_like.environments import users
from support.auth import bearer, mint
from support.helpers import wait_ready
from support.polling import finished, wait_for
from support.registry import COLUMNS, ROW, form, iris_frame

CONTAINED = landlock.abi() >= 4
# pickles and joblib files load only in contained workers (Landlock ABI 4): where the kernel has none
# these tests cannot run; CI's kernel has it (DEEPAAS_LIKE_CI), so there a missing Landlock fails them
needs_containment = pytest.mark.skipif(
    not CONTAINED and not os.environ.get("DEEPAAS_LIKE_CI"),
    reason="pickles and joblib files load only in contained workers (Landlock ABI 4)",
)
# setosa and virginica swap names: a model retrained on these calls a setosa row "virginica"
SWAPPED = {"setosa": "virginica", "virginica": "setosa", "versicolor": "versicolor"}


@pytest.fixture
def retrain_app(aiohttp_client, make_settings):
    """The app with the registry, as the registry's tests start it (``auth=True`` and so on)."""

    async def start(**overrides):
        client = await aiohttp_client(
            create_app(make_settings(model_name=("echobench",), executor="thread", **overrides))
        )
        await wait_ready(client)
        return client

    return start


async def put_model(client, name: str, path: Path, expect: int = 201, **headers) -> dict:
    response = await client.put(f"/v2/models/{name}", data=form(path), headers=headers)
    body = await response.json()
    assert response.status == expect, body
    return body


def relabelled_rows() -> list[dict]:
    x, y = iris_frame()
    return [{**row, "species": SWAPPED[label]} for row, label in zip(x.to_dict("records"), y)]


async def train(client, name: str, expect: int = 200, **kwargs) -> dict:
    response = await client.post(f"/v2/models/{name}/train/", **kwargs)
    body = await response.json()
    assert response.status == expect, body
    return body


async def trained(client, name: str, job: dict) -> dict:
    return await wait_for(client, f"/v2/models/{name}/train/{job['uuid']}", finished, timeout=120)


async def label_of(client, url: str) -> str:
    response = await client.post(url, json=ROW)
    body = await response.json()
    assert response.status == 200, body
    return body["predictions"]["label"]


async def test_a_pipeline_retrained_on_json_rows_is_the_next_version_and_learned_them(retrain_app, iris_models):
    client = await retrain_app()
    await put_model(client, "iris", iris_models["joblib"])  # StandardScaler + LogisticRegression
    assert await label_of(client, "/v2/models/iris/predict/") == "setosa"
    job = await train(client, "iris", json={"rows": relabelled_rows(), "target": "species"})
    assert job["status"] in ("queued", "running") and job["links"]["log"].endswith("/log")
    assert job["args"] == {"version": 1, "target": "species", "rows": 150, "features": COLUMNS}
    done = await trained(client, "iris", job)
    assert done["status"] == "done", done
    output = done["result"]["output"]
    assert (output["version"], output["parent"], output["current_version"], output["rows"]) == (2, 1, 2, 150)
    # the new version serves at once as the current one, and learned the new labels; the old one did not change
    assert await label_of(client, "/v2/models/iris/predict/") == "virginica"
    assert await label_of(client, "/v2/models/iris/versions/1/predict/") == "setosa"
    version = await (await client.get("/v2/models/iris/versions/2")).json()
    assert version["status"] == "ready" and version["filetype"] == "joblib"
    assert version["source"] == {
        "kind": "training",
        "training": job["uuid"],
        "parent": 1,
        "rows": 150,
        "target": "species",
        "features": COLUMNS,
    }
    assert version["links"]["log"].endswith(f"/v2/models/iris/train/{job['uuid']}/log")
    assert version["links"]["parent"].endswith("/v2/models/iris/versions/1")
    assert version["links"]["training"].endswith(f"/v2/models/iris/train/{job['uuid']}")
    assert [c["name"] for c in version["signature"]["columns"]] == COLUMNS
    assert "Pipeline(StandardScaler, LogisticRegression)" in json.dumps(version["signature"])
    model = await (await client.get("/v2/models/iris/")).json()
    assert model["current_version"] == 2
    log = await (await client.get(f"/v2/models/iris/train/{job['uuid']}/log")).text()
    assert "retraining version 1" in log and "recorded as version 2: ready" in log
    listed = await (await client.get("/v2/models/iris/train/")).json()
    assert [j["uuid"] for j in listed] == [job["uuid"]]
    # its reference dataset is the training rows' features: feature impact runs on it at once
    dataset = await client.get("/v2/models/iris/versions/2/dataset")
    assert (await dataset.text()).splitlines()[0] == ",".join(COLUMNS)
    impact = await client.post("/v2/models/iris/feature-impact/", json={"seed": 1, "rowCount": 30})
    assert impact.status == 202, await impact.json()
    measured = await wait_for(client, (await impact.json())["links"]["self"], finished)
    assert measured["status"] == "done", measured


async def test_a_forest_with_unnamed_inputs_retrains_from_a_csv_file_or_body(retrain_app, iris_models, tmp_path):
    client = await retrain_app()
    await put_model(client, "forest", iris_models["pickle"])  # fitted on a bare array: inputs x0..x3
    x, y = iris_frame()
    frame = pd.DataFrame(x.to_numpy(), columns=[f"x{i}" for i in range(4)])
    frame["label"] = [SWAPPED[label] for label in y]
    csv = frame.to_csv(index=False).encode()
    multipart = aiohttp.FormData()
    multipart.add_field("file", csv, filename="iris.csv", content_type="text/csv")
    multipart.add_field("target", "label")
    first = await trained(client, "forest", await train(client, "forest", data=multipart))
    assert first["status"] == "done", first
    single = {f"x{i}": v for i, v in enumerate(ROW.values())}
    answer = await (await client.post("/v2/models/forest/predict/", json=single)).json()
    assert answer["predictions"]["label"] == "virginica"
    # the CSV as the body, the options in the query; from version 1 again
    body = await train(
        client, "forest", data=csv, headers={"Content-Type": "text/csv"}, params={"target": "label", "version": "1"}
    )
    second = await trained(client, "forest", body)
    assert second["status"] == "done", second
    version = await (await client.get("/v2/models/forest/versions/3")).json()
    assert version["source"]["parent"] == 1 and version["source"]["rows"] == 150
    assert version["filename"] == "forest-retrained.joblib"
    assert [c["name"] for c in version["signature"]["columns"]] == [f"x{i}" for i in range(4)]


async def test_what_cannot_be_retrained_is_a_clear_4xx_and_leaves_no_version(retrain_app, iris_models, tmp_path):
    client = await retrain_app()
    await put_model(client, "iris", iris_models["joblib"])
    rows = relabelled_rows()
    cases = {
        "no target": ({"rows": rows}, "target"),
        "a target that is no column": ({"rows": rows, "target": "kind"}, "no column 'kind'"),
        "an unknown feature": ({"rows": [{**r, "colour": 1} for r in rows], "target": "species"}, "colour"),
        "a row without a feature": ({"rows": [*rows, {"species": "setosa"}], "target": "species"}, "Row 150 lacks"),
        "no rows": ({"target": "species"}, "Send the training rows"),
        "too many rows": ({"rows": rows * 67, "target": "species"}, "10000"),
        "a bad version": ({"rows": rows, "target": "species", "version": "one"}, "positive integer"),
        "an unknown field": ({"rows": rows, "target": "species", "epochs": 3}, "epochs"),
    }
    for what, (body, said) in cases.items():
        sent = io.BytesIO(json.dumps(body).encode())  # (aiohttp warns of a large body sent as bytes)
        answer = await train(client, "iris", expect=422, data=sent, headers={"Content-Type": "application/json"})
        assert said in answer["message"], (what, answer)
    missing = await train(client, "iris", expect=404, json={"rows": rows, "target": "species", "version": 9})
    assert "9" in missing["message"]
    assert (await client.post("/v2/models/nosuch/train/", json={"rows": rows, "target": "species"})).status == 404
    # an ONNX model is no scikit-learn model
    graph = convert_sklearn(iris_models["forest"], initial_types=[("input", FloatTensorType([None, 4]))])
    (tmp_path / "forest.onnx").write_bytes(graph.SerializeToString())
    await put_model(client, "graph", tmp_path / "forest.onnx")
    onnx = await train(client, "graph", expect=422, json={"rows": rows, "target": "species"})
    assert "Only scikit-learn models can be retrained here" in onnx["message"] and "onnx" in onnx["message"]
    # features that are not numbers: the fit's own error, and nothing recorded
    words = [{**r, "sepal_length": "long"} for r in rows]
    failed = await trained(client, "iris", await train(client, "iris", json={"rows": words, "target": "species"}))
    assert failed["status"] == "error" and "the fit failed" in failed["message"] and "long" in failed["message"], failed
    versions = (await (await client.get("/v2/models/iris/versions/")).json())["versions"]
    assert [v["version"] for v in versions] == [1]
    spec = await (await client.get("/swagger.json")).json()  # the document says which models retrain
    assert "/v2/models/graph/train/" not in spec["paths"]
    body = spec["paths"]["/v2/models/iris/train/"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["required"] == ["rows", "target"] and "text/csv" in body
    staged = tmp_path / "data" / "artifacts" / "tmp"
    assert not [p for p in staged.rglob("*") if p.is_file()], "no staged file is left behind"


# A pickled estimator whose fit sleeps (named, so that the test sees its process), or whose fit
# tries what an attacker would and reports it as its error.
ESTIMATOR = r"""
import ctypes, json, os, socket, time
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

def attempt(results, name, action):
    try:
        results[name] = "MANAGED: " + repr(action())[:200]
    except BaseException as exc:
        results[name] = f"refused: {type(exc).__name__}: {exc}"[:240]

class Trick(ClassifierMixin, BaseEstimator):
    def __init__(self, mode="sleep"):
        self.mode = mode

    def fit(self, x, y):
        if self.mode == "sleep":
            ctypes.CDLL(None).prctl(15, b"retrainsleeps", 0, 0, 0)  # PR_SET_NAME
            time.sleep(600)
        results = {}
        attempt(results, "write into the data directory", lambda: open(os.path.join(DATA, "pwned"), "w").write("x"))
        attempt(results, "read the store", lambda: open(os.path.join(DATA, "state.sqlite3"), "rb").read(64))
        attempt(results, "list the uploaded files", lambda: os.listdir(ARTIFACTS))
        attempt(results, "write in /tmp", lambda: open("/tmp/retrain-pwned", "w").write("x"))
        attempt(results, "connect to the server", lambda: socket.create_connection(("127.0.0.1", PORT), 3).close())
        udp = lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", PORT))
        attempt(results, "send UDP", udp)
        attempt(results, "read the server's environ", lambda: open(f"/proc/{SERVER}/environ", "rb").read(64))
        attempt(results, "signal the server", lambda: os.kill(SERVER, 0))
        raise RuntimeError("REPORT" + json.dumps(results) + "END")

    def predict(self, x):
        return np.zeros(len(x), dtype=int)

model = Trick(MODE)
model.classes_ = np.array([0, 1])
model.n_features_in_ = 4
"""


class CodeOnLoad:
    """A pickle that runs ``code`` when loaded and answers the ``model`` it defines (as in
    test_containment.py)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (f"(lambda g: (exec({self.code!r}, g), g.get('model'))[1])({{}})",))


def trick(tmp_path: Path, mode: str, **names) -> Path:
    code = "".join(f"{name} = {value!r}\n" for name, value in {"MODE": mode, **names}.items()) + ESTIMATOR
    path = tmp_path / f"trick-{mode}.pkl"
    path.write_bytes(pickle.dumps(CodeOnLoad(code)))
    return path


def processes_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def numbered_rows() -> list[dict]:
    rng = np.random.default_rng(0)
    return [{**{f"x{i}": float(v) for i, v in enumerate(rng.random(4))}, "y": i % 2} for i in range(20)]


@pytest.mark.slow
@needs_containment
async def test_a_cancelled_retraining_kills_its_process_and_leaves_no_version(
    retrain_app, tmp_path, iris_models, aiohttp_server
):
    received: list[dict] = []

    async def hook(request):
        received.append(await request.json())
        return web.json_response({})

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    client = await retrain_app()  # one training at a time (--max-concurrent-trainings 1)
    await put_model(client, "sleepy", trick(tmp_path, "sleep"))
    await put_model(client, "iris", iris_models["joblib"])
    job = await train(client, "sleepy", json={"rows": numbered_rows(), "target": "y"})
    deadline = time.monotonic() + 60
    while not processes_named("retrainsleeps"):
        assert time.monotonic() < deadline, "the fit never started"
        await asyncio.sleep(0.1)
    # a second retraining waits in the trainings' queue, as a plugin's training would
    hook_url = f"http://127.0.0.1:{server.port}/hook"
    waiting = await train(
        client, "iris", json={"rows": relabelled_rows(), "target": "species", "callback_url": hook_url}
    )
    assert waiting["status"] == "queued"
    await asyncio.sleep(0.5)
    assert (await (await client.get(f"/v2/models/iris/train/{waiting['uuid']}")).json())["status"] == "queued"
    cancelled = await client.delete(f"/v2/models/sleepy/train/{job['uuid']}")
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    done = await trained(client, "iris", waiting)  # its turn came with the cancel
    assert done["status"] == "done" and done["result"]["output"]["version"] == 2
    deadline = time.monotonic() + 30
    while not received:
        assert time.monotonic() < deadline, "the retraining's callback never came"
        await asyncio.sleep(0.1)
    assert received[0]["uuid"] == waiting["uuid"] and received[0]["status"] == "done"
    deadline = time.monotonic() + 10
    while processes_named("retrainsleeps") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not processes_named("retrainsleeps")
    await asyncio.sleep(0.5)  # nothing is recorded after the cancel either
    versions = (await (await client.get("/v2/models/sleepy/versions/")).json())["versions"]
    assert [v["version"] for v in versions] == [1]
    again = await client.delete(f"/v2/models/sleepy/train/{job['uuid']}")
    assert again.status == 409


@pytest.mark.slow
@needs_containment
async def test_a_hostile_fit_is_contained_like_a_hostile_load(retrain_app, tmp_path, make_settings):
    client = await retrain_app()
    settings = make_settings()
    names = {
        "DATA": settings.data_dir,
        "ARTIFACTS": str(settings.artifacts_dir),
        "PORT": client.server.port,
        "SERVER": os.getpid(),
    }
    await put_model(client, "hostile", trick(tmp_path, "attack", **names))
    failed = await trained(
        client, "hostile", await train(client, "hostile", json={"rows": numbered_rows(), "target": "y"})
    )
    assert failed["status"] == "error", failed
    error = failed["message"]
    report = json.loads(error[error.index("REPORT") + 6 : error.index("END")])
    managed = {attack: outcome for attack, outcome in report.items() if not outcome.startswith("refused")}
    assert not managed, f"the hostile fit managed: {managed}"
    assert len(report) == 8
    assert not (Path(settings.data_dir) / "pwned").exists() and not Path("/tmp/retrain-pwned").exists()
    versions = (await (await client.get("/v2/models/hostile/versions/")).json())["versions"]
    assert [v["version"] for v in versions] == [1]
    assert (await client.get("/v2/health/live")).status == 200


@pytest.mark.slow
async def test_retraining_needs_what_an_upload_needs(retrain_app, iris_models, tmp_path):
    secret = tmp_path / "jwt.secret"
    secret.write_text("s" * 40)
    ada, bob = (jwt.encode({"userId": u, "exp": int(time.time() + 600)}, "s" * 40) for u in ("ada", "bob"))
    predicts = mint(tmp_path / "data", "--name", "p", "--user", "ada", *scopes("read", "predict"))
    no_write = mint(tmp_path / "data", "--name", "t", "--user", "ada", *scopes("read", "predict", "train"))
    client = await retrain_app(auth=True, jwt_secret_file=str(secret))
    await client.get("/v2/models/", headers=bearer(bob))  # users are known once seen
    await put_model(client, "iris", iris_models["skops"], **bearer(ada))  # private: ada's
    body = {"json": {"rows": relabelled_rows(), "target": "species"}}
    assert (await client.post("/v2/models/iris/train/", headers=bearer(predicts), **body)).status == 403
    refused = await client.post("/v2/models/iris/train/", headers=bearer(no_write), **body)
    assert refused.status == 403 and "models:write" in (await refused.json())["message"]
    assert (await client.post("/v2/models/iris/train/", headers=bearer(bob), **body)).status == 404
    shared = await client.patch(
        "/v2/models/iris/access-control", headers=bearer(ada), json={"data": [{"userId": "bob", "role": "CONSUMER"}]}
    )
    assert shared.status == 204
    assert (await client.post("/v2/models/iris/train/", headers=bearer(bob), **body)).status == 403
    job = await (await client.post("/v2/models/iris/train/", headers=bearer(ada), **body)).json()
    url = f"/v2/models/iris/train/{job['uuid']}"
    assert (await client.get(url, headers=bearer(bob))).status == 404  # a consumer does not see the owner's jobs
    deadline = time.monotonic() + 120
    while (done := await (await client.get(url, headers=bearer(ada))).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, done
        await asyncio.sleep(0.1)
    assert done["status"] == "done", done
    version = await (await client.get("/v2/models/iris/versions/2", headers=bearer(ada))).json()
    assert version["filetype"] == "skops" and version["source"]["parent"] == 1  # a safe format stays one


def scopes(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--scope", f"models:{name}")]


@pytest.mark.slow  # a real uv build (scikit-learn's wheels from PyPI), as tests/api/test_registry_environments.py
@needs_containment
async def test_a_version_in_its_own_environment_is_retrained_there(aiohttp_client, make_settings, iris_models):
    app = create_app(make_settings(model_name=("echobench",), executor="thread"))
    client = await aiohttp_client(app)
    await wait_ready(client)
    upload = form(iris_models["joblib"])
    pinned = f"scikit-learn=={sklearn.__version__}\n"  # an environment without pandas
    upload.add_field("requirements", pinned.encode(), filename="requirements.txt", content_type="text/plain")
    assert (await client.put("/v2/models/iris", data=upload)).status == 202
    settled = lambda v: v["status"] in ("ready", "error")  # noqa: E731
    parent = await wait_for(client, "/v2/models/iris/versions/1", settled, timeout=600)
    assert parent["status"] == "ready" and parent["environment"], parent
    job = await train(client, "iris", json={"rows": relabelled_rows(), "target": "species"})
    done = await trained(client, "iris", job)
    assert done["status"] == "done", done
    version = await (await client.get("/v2/models/iris/versions/2")).json()
    assert version["status"] == "ready" and version["environment"] == parent["environment"]
    assert version["requirements"] == [pinned.strip()]
    # fitted where pandas is not: on an array, so its file names no columns; its input schema does
    assert "columns" not in version["signature"] and version["signature"]["n_inputs"] == 4
    assert await label_of(client, "/v2/models/iris/predict/") == "virginica"
    kept = users(app[MODELS].uploads.environments.root)
    assert kept["version:iris/2"]["environment"] == parent["environment"]  # deepaas-env gc keeps it for it too
