"""A plugin in an environment of its own (deepaas-install-plugin --isolated): a DEEPaaS-era
plugin pinned to webargs 5.5.3 and marshmallow 3.13 (tests/fixtures/isolated/oldwebargs),
which refuses to import next to the server's webargs 8, served in one deepaas-run next to
irisbench on the server's own libraries: both predict, both validate alike, both have their
forms in Swagger UI and /ui/, both run from deepaas-cli. Real uv builds from PyPI, real
servers, a real browser."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import webargs
from openapi_spec_validator import validate as validate_openapi

from deepaas_like.api import create_app
from deepaas_like.environments import EnvironmentStore, users
from support import TESTS
from support.browser import page  # noqa: F401 (a fixture)
from support.helpers import wait_ready
from support.processes import Server

BIN = Path(sys.executable).parent
FIXTURES = TESTS / "fixtures" / "isolated"
IRIS = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


def install(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "deepaas-install-plugin"), "--isolated", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A data directory where oldwebargs is installed in its own environment (built once)."""
    data_dir = tmp_path_factory.mktemp("isolated") / "data"
    done = install(data_dir, str(FIXTURES / "oldwebargs"))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "keep     deepaas>=2.1" in done.stdout  # the runtime provides deepaas
    assert "require  webargs==5.5.3" in done.stdout and "installed oldwebargs in environment" in done.stdout
    return data_dir


def test_the_plugin_is_registered_with_its_environment_and_its_own_code(installed):
    root = installed / "environments"
    (record,) = [r for user, r in users(root).items() if user == "plugin:oldwebargs"]
    environment = EnvironmentStore(root).get(record["environment"])
    assert environment is not None and "webargs==5.5.3" in environment.lock.splitlines()
    assert "deepaas" not in environment.lock  # provided by the worker's runtime, never installed
    (code,) = record["code"]
    assert (Path(code) / "oldwebargs_plugin" / "api.py").is_file()
    listed = subprocess.run(
        [str(BIN / "deepaas-env"), "--data-dir", str(installed), "list"], capture_output=True, text=True
    )
    assert listed.returncode == 0 and environment.key[:12] in listed.stdout, listed.stderr
    kept = subprocess.run(
        [str(BIN / "deepaas-env"), "--data-dir", str(installed), "gc", "--grace", "0"], capture_output=True, text=True
    )
    assert kept.returncode == 0 and EnvironmentStore(root).get(environment.key) is not None, kept.stdout + kept.stderr


async def test_served_next_to_irisbench_each_on_its_own_libraries(aiohttp_client, make_settings, installed):
    settings = make_settings(model_name=("oldwebargs", "irisbench"), data_dir=str(installed))
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client, timeout=120)
    assert "oldwebargs_plugin" not in sys.modules  # the server never imported it
    answer = await client.post("/v2/models/oldwebargs/predict/", json={"x": 1.5, "times": 4})
    body = await answer.json()
    assert answer.status == 200, body
    assert body["predictions"]["value"] == 6.0 and body["predictions"]["unit"] == "m"
    assert body["predictions"]["webargs"] == "5.5.3" and body["predictions"]["marshmallow"] == "3.13.0"
    assert webargs.__version__.startswith("8.")  # the server's, beside it
    iris = await client.post("/v2/models/irisbench/predict/", json=IRIS)
    assert iris.status == 200 and (await iris.json())["predictions"]["label"] == "virginica"

    # The server checks what JSON Schema says (422 before any worker) ...
    refused = await client.post("/v2/models/oldwebargs/predict/", json={"x": 11, "unit": "km"})
    assert refused.status == 422
    assert set((await refused.json())["errors"]) == {"x", "unit"}
    missing = await client.post("/v2/models/oldwebargs/predict/", json={})
    assert missing.status == 422 and "x" in (await missing.json())["errors"]
    # ... and the plugin's worker what it cannot (a function of the plugin's): the same 422's shape.
    odd = await client.post("/v2/models/oldwebargs/predict/", json={"x": 1, "times": 3})
    odd_body = await odd.json()
    assert odd.status == 422 and odd_body["errors"] == {"times": ["Must be even."]}, odd_body
    assert odd_body["message"] == "Invalid arguments for oldwebargs predict: times: Must be even."

    # A file, in DEEPaaS's own vocabulary (fields.Field(type="file", location="form")).
    upload = aiohttp.FormData()
    upload.add_field("x", "2")
    upload.add_field("data", b"12345", filename="five.bin")
    sent = await client.post("/v2/models/oldwebargs/predict/", data=upload)
    assert sent.status == 200 and (await sent.json())["predictions"]["file_size"] == 5

    metadata = await (await client.get("/v2/models/oldwebargs")).json()
    assert metadata["description"] == "webargs 5 in its own environment" and metadata["version"] == "0.3.0"

    document = await (await client.get("/swagger.json")).json()
    validate_openapi(document)
    form = document["paths"]["/v2/models/oldwebargs/predict/"]["post"]["requestBody"]["content"]
    properties = form["multipart/form-data"]["schema"]["properties"]
    assert properties["unit"]["enum"] == ["m", "cm"] and properties["unit"]["default"] == "m"
    assert properties["x"]["minimum"] == -10 and properties["x"]["description"] == "A number"
    assert properties["data"]["format"] == "binary"
    assert form["multipart/form-data"]["schema"]["required"] == ["x"]

    # A training runs in the environment too (a process of its interpreter).
    started = await client.post("/v2/models/oldwebargs/train/", json={"epochs": 3})
    assert started.status == 200, await started.text()
    location = (await started.json())["links"]["self"]
    for _ in range(600):
        training = await (await client.get(location)).json()
        if training["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.1)
    assert training["status"] == "done", training
    assert training["result"]["output"] == {"epochs": 3, "webargs": "5.5.3"}


def test_deepaas_cli_runs_both_on_a_real_server(installed):
    server = Server(["--data-dir", str(installed), "--model-name", "oldwebargs", "--model-name", "irisbench"])
    try:
        server.wait_banner(120)
        server.wait_ready(120)
        cli = [str(BIN / "deepaas-cli"), "--url", server.base]
        done = subprocess.run(
            [*cli, "--model-name", "oldwebargs", "predict", "--x", "2", "--times", "6"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["value"] == 12.0
        helped = subprocess.run(
            [*cli, "--model-name", "oldwebargs", "predict", "--help"], capture_output=True, text=True
        )
        assert "--unit {m,cm}" in helped.stdout and "A number (required)" in helped.stdout, helped.stdout
        wrong = subprocess.run(
            [*cli, "--model-name", "oldwebargs", "predict", "--x", "2", "--unit", "km"], capture_output=True, text=True
        )
        assert wrong.returncode == 2 and "invalid choice: 'km'" in wrong.stderr
        iris = [f"--{k}={v}" for k, v in IRIS.items()]
        done = subprocess.run([*cli, "--model-name", "irisbench", "predict", *iris], capture_output=True, text=True)
        assert done.returncode == 0 and json.loads(done.stdout)["label"] == "virginica", done.stderr
    finally:
        assert server.stop() == 0, server.stderr_now()


async def test_its_forms_in_swagger_ui_and_the_what_if_page(aiohttp_client, make_settings, installed, page):
    from e2e.test_browser import execute, open_operation
    from e2e.test_ui import open_model, predict
    from playwright.async_api import expect

    client = await aiohttp_client(
        create_app(make_settings(model_name=("oldwebargs", "irisbench"), data_dir=str(installed)))
    )
    await wait_ready(client, timeout=120)
    base = str(client.make_url("")).rstrip("/")
    for model, values in (
        ("oldwebargs", {"x": "3", "times": "2"}),
        ("irisbench", {k: str(v) for k, v in IRIS.items()}),
    ):
        operation = await open_operation(page, base, model, f"{model}_predict")
        await operation.locator("select").first.select_option("multipart/form-data")
        for name, value in values.items():
            await operation.locator(f'tr[data-property-name="{name}"] input[type="text"]').fill(value)
        assert await execute(operation) == "200"
        body = await operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
        assert ('"webargs": "5.5.3"' if model == "oldwebargs" else '"label": "virginica"') in body, body
        await page.screenshot(path=str(page.screenshots / f"swagger-{model}.png"))
    await open_model(page, f"{base}/ui/models/oldwebargs")
    await page.locator('#predict-form [name="x"]').fill("4")
    result = await predict(page, "200")
    await expect(result).to_contain_text("5.5.3")
    await expect(page.locator('#predict-form [name="unit"]')).to_have_value("m")
    await page.screenshot(path=str(page.screenshots / "ui-oldwebargs.png"))


def test_a_plugin_that_does_not_import_in_its_environment_is_refused_with_why(tmp_path):
    data_dir = tmp_path / "data"
    done = install(data_dir, str(FIXTURES / "forgetful"))
    assert done.returncode == 1
    assert "forgetful does not import in its environment" in done.stderr
    assert "No module named 'webargs'" in done.stderr, done.stderr
    assert not [u for u in users(data_dir / "environments") if u.startswith("plugin:")]


async def test_a_plugin_whose_environment_is_gone_is_listed_as_failed_with_how_to_rebuild(
    aiohttp_client, make_settings, installed, tmp_path
):
    data_dir = tmp_path / "data"
    shutil.copytree(installed / "environments" / "users", data_dir / "environments" / "users")
    client = await aiohttp_client(create_app(make_settings(data_dir=str(data_dir))))
    listed = await (await client.get("/v2/models/")).json()
    (entry,) = [m for m in listed["models"] if m["name"] == "oldwebargs"]
    assert entry["state"] == "failed"
    assert "is gone" in entry["error"] and "deepaas-install-plugin --isolated" in entry["error"]
    answer = await client.post("/v2/models/oldwebargs/predict/", json={"x": 1})
    assert answer.status == 503


def test_deepaas_cli_in_process_points_to_a_server_and_uninstall_stops_serving_it(installed, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(installed / "environments" / "users", data_dir / "environments" / "users")
    environ = {**os.environ, "DEEPAAS_DATA_DIR": str(data_dir)}
    local = subprocess.run(
        [str(BIN / "deepaas-cli"), "--model-name", "oldwebargs", "predict", "--x", "1"],
        capture_output=True,
        text=True,
        env=environ,
    )
    assert local.returncode == 2 and "environment of its own" in local.stderr and "--url" in local.stderr, local.stderr
    done = install(data_dir, "--uninstall", "oldwebargs")
    assert done.returncode == 0 and "uninstalled oldwebargs" in done.stdout, done.stderr
    assert "plugin:oldwebargs" not in users(data_dir / "environments")
    again = install(data_dir, "--uninstall", "oldwebargs")
    assert again.returncode == 1 and "no model oldwebargs in an environment of its own" in again.stderr


async def test_the_server_removes_at_start_the_environments_nothing_uses(aiohttp_client, make_settings, tmp_path):
    """An environment no model uses, built longer ago than the grace, goes when a server
    starts; one built a moment ago stays (a model may be about to record its use)."""
    data_dir = tmp_path / "data"
    store = EnvironmentStore(data_dir / "environments")
    old = store.build(["six==1.16.0"])
    recent = store.build(["six==1.15.0"])
    long_ago = time.time() - 2 * 3600
    os.utime(old.path / ".complete", (long_ago, long_ago))
    client = await aiohttp_client(create_app(make_settings(model_name=("echobench",), data_dir=str(data_dir))))
    await wait_ready(client)
    for _ in range(100):
        if store.get(old.key) is None:
            break
        await asyncio.sleep(0.05)
    assert store.get(old.key) is None and store.get(recent.key) is not None


async def test_a_worker_of_the_environment_that_dies_is_replaced(aiohttp_client, make_settings, installed):
    settings = make_settings(model_name=("oldwebargs",), data_dir=str(installed))
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client, timeout=120)
    first = (await (await client.post("/v2/models/oldwebargs/predict/", json={"x": 1})).json())["predictions"]["pid"]
    os.kill(first, signal.SIGKILL)
    for _ in range(200):
        ready = await (await client.get("/v2/models/oldwebargs/ready")).json()
        if ready["restarts"] == 1 and ready["ready"]:
            break
        await asyncio.sleep(0.05)
    answer = await client.post("/v2/models/oldwebargs/predict/", json={"x": 1})
    body = await answer.json()
    assert answer.status == 200 and body["predictions"]["pid"] != first and body["predictions"]["webargs"] == "5.5.3"
    assert ready["restarts"] == 1
