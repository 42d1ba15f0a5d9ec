"""Uploads with their own requirements: a version whose scikit-learn is not the server's,
built into an environment of its own by uv (a durable job with DataRobot's dependencyBuild
and its log), served by contained hosts of that environment's interpreter, rolled back to a
version on the server's environment; a build that fails names the requirement."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import time

import aiohttp
import numpy as np
import pytest
import sklearn

from deepaas_like.api import create_app
from deepaas_like.api.keys import MODELS
from deepaas_like.containment import landlock
from deepaas_like.environments import EnvironmentStore, users
from support.auth import bearer, mint
from support.helpers import store_rows, wait_ready
from support.registry import ROW, form

OLD_SKLEARN = "1.6.1"  # wheels for Python 3.11; the server has a newer one
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1], [5.9, 3.0, 4.2, 1.5]]
# Fitted and saved by the old scikit-learn, in its environment; its answers for ROWS with it.
FIT = """
import json, sys
import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
names = load_iris().target_names
model = LogisticRegression(max_iter=500).fit(x, names[y])
joblib.dump(model, sys.argv[1])
rows = json.loads(sys.argv[2])
print(json.dumps({"version": sklearn.__version__, "labels": model.predict(rows).tolist(),
                  "probabilities": model.predict_proba(rows).tolist(), "classes": model.classes_.tolist()}))
"""

pytestmark = pytest.mark.slow  # real uv builds from PyPI (as tests/e2e/test_environments.py): make test runs them


@pytest.fixture(autouse=True, scope="module")
def landlock_present():
    """joblib files are served only from contained hosts (Landlock ABI 4): where the kernel has
    none the tests cannot run; CI's kernel has it, so there a missing Landlock fails."""
    if landlock.abi() < 4:
        if os.environ.get("DEEPAAS_LIKE_CI"):
            pytest.fail("Landlock ABI 4 is missing: contained hosts cannot run (CI's kernel has it)")
        pytest.skip("joblib files are served only from contained hosts (Landlock ABI 4)")


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory):
    """One uv cache for the module: scikit-learn's wheels are downloaded once."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(scope="module")
def old_model(tmp_path_factory, uv_cache):
    """An iris classifier made by scikit-learn 1.6.1 (in an environment of its own), and its answers."""
    where = tmp_path_factory.mktemp("old-sklearn")
    environment = EnvironmentStore(where / "environments", cache_dir=uv_cache).build([f"scikit-learn=={OLD_SKLEARN}"])
    path = where / "iris-old.joblib"
    done = subprocess.run(
        [str(environment.python), "-c", FIT, str(path), json.dumps(ROWS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return {"path": path, **json.loads(done.stdout)}


@pytest.fixture
def registry_app(aiohttp_client, make_settings, uv_cache):
    async def start(**overrides):
        settings = make_settings(model_name=("echobench",), executor="thread", **overrides)
        app = create_app(settings)
        environments = app[MODELS].uploads.environments
        environments.store = EnvironmentStore(environments.root, cache_dir=uv_cache)
        client = await aiohttp_client(app)
        await wait_ready(client)
        return client

    return start


def requirements_form(path, requirements: str, **fields) -> aiohttp.FormData:
    data = form(path, **fields)
    data.add_field("requirements", requirements.encode(), filename="requirements.txt", content_type="text/plain")
    return data


async def built(client, href: str, timeout: float = 300.0) -> tuple[dict, list[str]]:
    """The dependency build once it ended, and each build status seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(href)
        body = await response.json()
        assert response.status == 200, body
        if not seen or seen[-1] != body["buildStatus"]:
            seen.append(body["buildStatus"])
        if body["buildStatus"] in ("success", "failed"):
            return body, seen
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)


async def predicted(client, path: str, rows) -> list[dict]:
    response = await client.post(path, json={"rows": rows})
    body = await response.json()
    assert response.status == 200, body
    return body["predictions"]


async def test_a_version_with_other_requirements_is_built_served_and_rolled_back(registry_app, iris_models, old_model):
    client = await registry_app()
    first = await client.put("/v2/models/iris", data=form(iris_models["pickle"]))
    assert first.status == 201, await first.json()
    on_server = await predicted(client, "/v2/models/iris/predict/", ROWS)

    started = time.monotonic()
    response = await client.put(
        "/v2/models/iris",
        data=requirements_form(old_model["path"], f"# the model's own\nscikit-learn=={OLD_SKLEARN}  # pinned\n"),
    )
    answer = await response.json()
    assert response.status == 202, answer
    assert answer["version"]["status"] == "building" and answer["current_version"] == 1
    assert answer["version"]["requirements"] == [f"scikit-learn=={OLD_SKLEARN}"]
    href = "/v2/models/iris/versions/2/dependencyBuild"
    assert response.headers["Location"].endswith(href)
    assert answer["dependencyBuild"]["buildStatus"] in ("submitted", "processing")
    # the current version serves meanwhile
    assert await predicted(client, "/v2/models/iris/predict/", ROWS) == on_server

    build, seen = await built(client, href)
    ready_after = time.monotonic() - started
    assert build["buildStatus"] == "success", build
    assert "processing" in seen and seen[-1] == "success", seen
    assert build["error"] is None and build["requirements"] == [f"scikit-learn=={OLD_SKLEARN}"]
    assert build["buildStart"] and build["buildEnd"] and build["buildLogLocation"].endswith(href + "Log")
    key = build["environment"]
    assert len(key) == 64

    version = await (await client.get("/v2/models/iris/versions/2")).json()
    assert version["status"] == "ready" and version["environment"] == key
    # loaded by the old scikit-learn, in its environment: not the server's
    assert old_model["version"] == OLD_SKLEARN != sklearn.__version__
    assert version["signature"]["details"]["loaded_with"] == {"scikit-learn": OLD_SKLEARN}
    assert version["library_versions"] == {"scikit-learn": OLD_SKLEARN}
    model = await (await client.get("/v2/models/iris")).json()
    assert model["current_version"] == 2

    first_prediction = time.monotonic()
    answers = await predicted(client, "/v2/models/iris/predict/", ROWS)
    first_prediction = time.monotonic() - first_prediction
    assert [a["label"] for a in answers] == old_model["labels"]
    for got, expected in zip(answers, old_model["probabilities"]):
        assert np.allclose([got["probabilities"][c] for c in old_model["classes"]], expected)
    single = await client.post("/v2/models/iris/predict/", json=dict(zip(("x0", "x1", "x2", "x3"), ROWS[1])))
    assert (await single.json())["predictions"]["label"] == old_model["labels"][1]

    log = await client.get(build["buildLogLocation"])
    text = await log.text()
    assert log.status == 200 and log.content_type == "text/plain", text
    assert "$ uv pip compile" in text and f"scikit-learn=={OLD_SKLEARN}" in text and "version 2: ready" in text
    assert log.headers["X-Build-Status"] == "success"
    assert (await client.get(build["buildLogLocation"] + f"?offset={len(text.encode())}")).status == 200

    config = await (await client.get("/v2/models/iris/versions/2/config")).json()
    assert config["requirements"] == [f"scikit-learn=={OLD_SKLEARN}"]
    changed = await client.put("/v2/models/iris/versions/2/config", json={"requirements": ["scikit-learn==1.5.2"]})
    assert changed.status == 409 and "upload the file again" in (await changed.json())["message"]
    same = await client.put(
        "/v2/models/iris/versions/2/config", json={"requirements": [f"scikit-learn=={OLD_SKLEARN}"]}
    )
    assert same.status == 200, await same.json()
    assert (await client.get("/v2/models/iris/versions/1/dependencyBuild")).status == 404

    root = client.app[MODELS].uploads.environments.root
    assert users(root)["version:iris/2"]["environment"] == key

    # back to the version on the server's environment (another pool), and forward again
    rolled = await client.patch("/v2/models/iris", json={"current_version": 1})
    assert rolled.status == 200, await rolled.json()
    assert await predicted(client, "/v2/models/iris/predict/", ROWS) == on_server
    again = await client.patch("/v2/models/iris", json={"current_version": 2})
    assert again.status == 200
    assert [a["label"] for a in await predicted(client, "/v2/models/iris/predict/", ROWS)] == old_model["labels"]
    assert [a["label"] for a in await predicted(client, "/v2/models/iris/versions/1/predict/", ROWS)] == [
        a["label"] for a in on_server
    ]

    purged = await client.delete("/v2/models/iris?purge=true")
    assert purged.status == 200
    assert "version:iris/2" not in users(root)
    print(f"\nready {ready_after:.2f} s after the upload (warm uv cache); first prediction {first_prediction:.3f} s")


async def test_a_failed_build_names_the_requirement_and_the_current_version_serves(registry_app, iris_models):
    client = await registry_app()
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]))).status == 201
    response = await client.put(
        "/v2/models/iris", data=requirements_form(iris_models["skops"], "scikit-learn==0.0.1\n")
    )
    assert response.status == 202, await response.json()
    build, _ = await built(client, "/v2/models/iris/versions/2/dependencyBuild")
    assert build["buildStatus"] == "failed" and build["environment"] is None
    assert "scikit-learn==0.0.1" in build["error"] and build["failedRequirement"] == "scikit-learn==0.0.1"
    version = await (await client.get("/v2/models/iris/versions/2")).json()
    assert version["status"] == "error" and "scikit-learn==0.0.1" in version["error"]
    model = await (await client.get("/v2/models/iris")).json()
    assert model["current_version"] == 1
    served = await client.post("/v2/models/iris/predict/", json=ROW)
    assert served.status == 200, await served.json()
    log = await (await client.get(build["buildLogLocation"])).text()
    assert "$ uv pip compile" in log and "scikit-learn==0.0.1" in log and "failed" in log
    refused = await client.patch("/v2/models/iris", json={"current_version": 2})
    assert refused.status == 409


async def test_requirements_need_the_write_code_scope(registry_app, iris_models, tmp_path):
    writer = mint(tmp_path / "data", "--name", "w", "--scope", "models:write", "--scope", "models:read")
    client = await registry_app(auth=True)
    refused = await client.put(
        "/v2/models/iris", data=requirements_form(iris_models["skops"], "six==1.16.0\n"), headers=bearer(writer)
    )
    body = await refused.json()
    assert refused.status == 403, body
    assert "models:write-code" in body["message"] and "without requirements" in body["message"]
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(writer))).status == 201


@pytest.mark.parametrize(
    "requirements, named",
    [
        ("-e .\n", "-e ."),
        ("--index-url https://example.org/simple\n", "--index-url"),
        ("/srv/wheels/model-1.0-py3-none-any.whl\n", "local path"),
        ("scikit-learn=>1.6\n", "scikit-learn=>1.6"),
        ("# nothing but a comment\n", "no package"),
    ],
)
async def test_bad_requirements_are_a_422_and_nothing_is_kept(registry_app, iris_models, requirements, named):
    client = await registry_app()
    response = await client.put("/v2/models/iris", data=requirements_form(iris_models["skops"], requirements))
    body = await response.json()
    assert response.status == 422, body
    assert named in body["message"] and "requirements" in body["errors"]
    assert (await client.get("/v2/models/iris")).status == 404


# Run by a pickle loaded in a contained host of a version's environment: what it reaches.
REACH = r"""
import json, os, sys
results = {}

def attempt(name, action):
    try:
        results[name] = "MANAGED: " + repr(action())[:200]
    except BaseException as exc:
        results[name] = f"refused: {type(exc).__name__}: {exc}"[:240]

attempt("read the store", lambda: open(os.path.join(DATA, "state.sqlite3"), "rb").read(64))
attempt("list the data directory", lambda: os.listdir(DATA))
attempt("list the environments", lambda: os.listdir(ENVIRONMENTS))
attempt("read who uses them", lambda: os.listdir(os.path.join(ENVIRONMENTS, "users")))
attempt("list the uploaded files", lambda: os.listdir(ARTIFACTS))
attempt("write into its environment", lambda: open(os.path.join(sys.prefix, "pwned"), "w").write("x"))
attempt("list its environment", lambda: sorted(os.listdir(sys.prefix)))
attempt("import its scikit-learn", lambda: __import__("sklearn").__version__)
raise RuntimeError("REPORT" + json.dumps({"results": results, "prefix": sys.prefix}) + "END")
"""


class CodeOnLoad:
    """A pickle that runs ``code`` when it is loaded."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code, {}))


async def test_a_hosts_environment_is_all_it_reads_of_the_data_directory(registry_app, make_settings, tmp_path):
    client = await registry_app()
    settings = make_settings()
    data = tmp_path / "data"
    code = "".join(
        f"{name} = {value!r}\n"
        for name, value in (
            ("DATA", str(data)),
            ("ENVIRONMENTS", str(data / "environments")),
            ("ARTIFACTS", str(settings.artifacts_dir)),
        )
    )
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps(CodeOnLoad(code + REACH)))
    response = await client.put("/v2/models/hostile", data=requirements_form(hostile, f"scikit-learn=={OLD_SKLEARN}\n"))
    assert response.status == 202, await response.json()
    build, _ = await built(client, "/v2/models/hostile/versions/1/dependencyBuild")
    assert build["buildStatus"] == "failed" and "REPORT" in build["error"], build
    report = json.loads(build["error"].split("REPORT", 1)[1].rsplit("END", 1)[0])
    results = report["results"]
    assert report["prefix"] == str(data / "environments" / build["environment"])
    assert results["import its scikit-learn"] == f"MANAGED: '{OLD_SKLEARN}'"
    assert results["list its environment"].startswith("MANAGED:") and "pyvenv.cfg" in results["list its environment"]
    reached = {name: result for name, result in results.items() if result.startswith("MANAGED")}
    assert set(reached) == {"import its scikit-learn", "list its environment"}, results


async def test_a_build_the_server_stops_does_not_stay_building(aiohttp_client, make_settings, uv_cache, tmp_path):
    settings = make_settings(model_name=("echobench",), executor="thread")

    async def start():
        app = create_app(settings)
        environments = app[MODELS].uploads.environments
        environments.store = EnvironmentStore(environments.root, cache_dir=uv_cache)
        client = await aiohttp_client(app)
        await wait_ready(client)
        return client

    client = await start()
    skops_file = tmp_path / "iris.skops"
    skops_file.write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # never loaded: the server stops first
    response = await client.put("/v2/models/iris", data=requirements_form(skops_file, "six==1.16.0\n"))
    assert response.status == 202, await response.json()
    await client.close()  # while it builds
    client = await start()
    build = await (await client.get("/v2/models/iris/versions/1/dependencyBuild")).json()
    assert build["buildStatus"] == "failed" and "stopped while building" in build["error"], build
    version = await (await client.get("/v2/models/iris/versions/1")).json()
    assert version["status"] == "error" and "stopped while building" in version["error"]
    await client.close()

    # killed instead (nothing could write): the next start ends the build
    rows = store_rows(
        tmp_path / "data", settings.store, "SELECT config FROM model_versions WHERE model = 'iris' AND number = 1"
    )
    config = json.loads(rows[0][0])
    config["build"].update(status="processing", error=None)
    write_row(tmp_path / "data", json.dumps(config))
    client = await start()
    build = await (await client.get("/v2/models/iris/versions/1/dependencyBuild")).json()
    assert build["buildStatus"] == "failed" and "upload again" in build["error"], build
    assert (await (await client.get("/v2/models/iris/versions/1")).json())["status"] == "error"


def write_row(data_dir, config: str) -> None:
    """Version 1 of iris as a server killed during its build leaves it."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{data_dir}/state.sqlite3")
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE model_versions SET status = 'building', error = NULL, config = :config"),
                {"config": config},
            )
    finally:
        engine.dispose()
