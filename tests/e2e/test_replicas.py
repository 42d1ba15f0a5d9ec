"""Replicas: several servers on one PostgreSQL and one artifact directory behave as one.

Real apps on a real (throwaway) PostgreSQL; the replica killed with SIGKILL is a real
``deepaas-run`` process.
"""

import asyncio
import signal
import time

import aiohttp
import pytest

from deepaas_like.api import create_app
from support.helpers import wait_ready
from support.processes import Server
from support.registry import ROW, form

pytestmark = pytest.mark.stores("postgresql")
LEASE = 2.0


async def eventually(check, timeout=10.0, what="the other replica to catch up"):
    """Poll ``check()`` (async, truthy when done) until it holds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
def replicas(aiohttp_client, make_settings, tmp_path, store):
    """Start N servers on the test's PostgreSQL, each with its own data directory; they
    share the artifact directory and the token key, as replicas behind a balancer do."""

    async def start(n=2, **overrides):
        clients = []
        for i in range(n):
            settings = make_settings(
                data_dir=str(tmp_path / f"replica{i}"),
                artifact_dir=str(tmp_path / "artifacts"),
                auth_key_file=str(tmp_path / "auth.key"),
                job_lease=LEASE,
                **overrides,
            )
            assert settings.store == store and store.startswith("postgresql://")
            client = await aiohttp_client(create_app(settings))
            await wait_ready(client)
            clients.append(client)
        return clients

    return start


async def test_a_model_uploaded_on_one_replica_is_served_by_the_others(replicas, iris_models):
    a, b = await replicas(model_name=("echobench",), executor="thread")
    created = await a.put("/v2/models/iris", data=form(iris_models["joblib"]))
    assert created.status == 201, await created.json()

    async def predicts_on_b():
        response = await b.post("/v2/models/iris/predict/", json=ROW)
        return response.status == 200 and await response.json()

    answer = await eventually(predicts_on_b)
    assert answer["predictions"]["label"] == "setosa"
    listed = await (await b.get("/v2/models/")).json()
    assert {"iris", "echobench"} <= {m["name"] for m in listed["models"]}
    # a change on B (a second version, then a roll back) is seen on A
    second = await b.put("/v2/models/iris", data=form(iris_models["pickle"], library="sklearn"))
    assert second.status == 200, await second.json()
    assert (await b.patch("/v2/models/iris", json={"current_version": 1})).status == 200

    async def a_sees_two_versions():
        versions = await (await a.get("/v2/models/iris/versions/")).json()
        current = await (await a.get("/v2/models/iris")).json()
        return len(versions["versions"]) == 2 and current.get("current_version") == 1

    await eventually(a_sees_two_versions)
    download = await a.get("/v2/models/iris/versions/2/download")  # the file lies in the shared directory
    assert download.status == 200 and await download.read() == iris_models["pickle"].read_bytes()
    assert (await a.delete("/v2/models/iris")).status in (200, 204)  # archived on A

    async def archived_on_b():
        response = await b.post("/v2/models/iris/predict/", json=ROW)
        return response.status == 404 and "archived" in (await response.json())["message"]

    await eventually(archived_on_b)


async def test_a_token_made_on_one_replica_works_on_all_and_its_revocation_too(replicas, tmp_path, store):
    from deepaas_like.auth.tokens import TokenTable, issue_token, server_key
    from deepaas_like.database import Database

    db = Database(tmp_path / "tool", url=store, exclusive=False)
    await db.open()
    admin = issue_token(server_key(tmp_path / "auth.key"), name="admin", scopes={"admin"})
    await TokenTable(db).insert(admin.record)
    await db.close()
    a, b = await replicas(model_name=("echobench",), executor="thread", auth=True)
    headers = {"Authorization": f"Bearer {admin.token}"}
    made = await a.post("/v2/tokens", json={"name": "client", "scopes": ["models:predict"]}, headers=headers)
    assert made.status == 201, await made.json()
    token = (await made.json())["token"]
    query = "/v2/models/echobench/predict/?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
    client_headers = {"Authorization": f"Bearer {token}"}

    async def accepted_on_b():
        return (await b.post(query, headers=client_headers)).status == 200

    await eventually(accepted_on_b)
    token_id = (await made.json())["id"]
    assert (await a.delete(f"/v2/tokens/{token_id}", headers=headers)).status in (200, 204)
    assert (await a.post(query, headers=client_headers)).status == 401  # on A at once

    async def refused_on_b():
        return (await b.post(query, headers=client_headers)).status == 401

    await eventually(refused_on_b, timeout=3.0)


async def test_a_training_runs_once_and_any_replica_shows_and_cancels_it(replicas, plugins):
    plugins.install("chatty", fixture="chatty_trainer")
    a, b = await replicas(model_name=("chatty",))
    job = await (await a.post("/v2/models/chatty/train/", json={"steps": 40, "step_seconds": 0.25})).json()
    url = f"/v2/models/chatty/train/{job['uuid']}"

    async def running_on_b():
        response = await b.get(url)
        body = await response.json() if response.status == 200 else {}
        return body.get("status") == "running" and (body.get("progress") or 0) > 0 and body

    await eventually(running_on_b)
    assert [j["uuid"] for j in await (await b.get("/v2/models/chatty/train/")).json()] == [job["uuid"]]

    async def log_on_b():
        text = await (await b.get(f"{url}/log")).text()
        return "print: step 2/40" in text and text

    await eventually(log_on_b)
    cancelled = await b.delete(url)  # on B; A runs it, so A kills its process
    body = await cancelled.json()
    assert cancelled.status == 200 and body["status"] == "cancelled", body
    on_a = await (await a.get(url)).json()
    assert on_a["status"] == "cancelled" and on_a["message"].startswith("cancelled by request")
    ran_once = await (await a.get(f"{url}/log")).text()
    assert ran_once.count("print: step 1/40") == 1


async def test_a_file_answer_of_an_async_prediction_is_served_by_every_replica(replicas, tmp_path):
    """The demo's PNG answer, predicted later on A, downloaded from B: the same bytes."""
    a, b = await replicas(model_name=("demo",), executor="thread")
    submitted = await a.post("/v2/models/demo/predictions/?values=1&values=5&values=9", headers={"Accept": "image/png"})
    assert submitted.status == 202, await submitted.text()
    job = await submitted.json()

    async def done_on_b():
        body = await (await b.get(f"/v2/models/demo/predictions/{job['uuid']}")).json()
        return body.get("status") == "done" and body

    await eventually(done_on_b)
    from_a = await a.get(f"/v2/models/demo/predictions/{job['uuid']}/result")
    from_b = await b.get(f"/v2/models/demo/predictions/{job['uuid']}/result")
    assert from_a.status == from_b.status == 200 and from_b.content_type == "image/png"
    png = await from_b.read()
    assert png.startswith(b"\x89PNG") and png == await from_a.read()
    assert (tmp_path / "artifacts" / "results" / job["uuid"]).read_bytes() == png


async def test_a_training_on_one_replica_is_served_by_all(replicas, tmp_path):
    """The demo saves its trained offset in storage_dir(), which replicas share (under
    --artifact-dir); the replica that did not train re-warms its workers and serves it."""
    a, b = await replicas(model_name=("demo",))
    predict = "/v2/models/demo/predict/?values=1&values=5"

    async def model_on(server):
        return (await (await server.post(predict)).json())["predictions"]["model"]

    assert (await model_on(b))["trained_at"] is None
    started = await a.post("/v2/models/demo/train/", json={"target_mean": 10, "epochs": 3, "epoch_seconds": 0})
    job = await started.json()

    async def done_on_a():
        return (await (await a.get(f"/v2/models/demo/train/{job['uuid']}")).json()).get("status") == "done"

    await eventually(done_on_a)
    trained = await model_on(a)
    assert trained["trained_at"] is not None and trained["offset"] != 0.0

    async def trained_on_b():
        model = await model_on(b)
        return model["trained_at"] is not None and model

    assert (await eventually(trained_on_b))["offset"] == trained["offset"]
    assert (tmp_path / "artifacts" / "models" / "demo").is_dir()


def replica_process(tmp_path, plugins, store, name: str) -> Server:
    server = Server(
        [
            "--model-name",
            "chatty",
            "--model-name",
            "echobench",
            "--executor",
            "echobench=thread",
            "--data-dir",
            str(tmp_path / name),
            "--artifact-dir",
            str(tmp_path / "artifacts"),
            "--auth-key-file",
            str(tmp_path / "auth.key"),
            "--job-lease",
            str(LEASE),
        ],
        env={"PYTHONPATH": str(plugins.path), "DEEPAAS_STORE": store},
    )
    server.wait_banner()
    server.wait_ready()
    return server


async def test_two_server_processes_behave_as_one_and_a_killed_one_loses_no_job(plugins, tmp_path, store, iris_models):
    """Two real deepaas-run processes on one PostgreSQL: jobs before, during and after a
    SIGKILL of one of them; none is lost, none runs twice, none stays running."""
    plugins.install("chatty", fixture="chatty_trainer")
    a = replica_process(tmp_path, plugins, store, "a")
    b = replica_process(tmp_path, plugins, store, "b")
    train = "/v2/models/chatty/train/"
    echo = "/v2/models/echobench/predictions/?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
    try:
        async with aiohttp.ClientSession() as http:

            async def call(server, method, path, **kwargs):
                async with http.request(method, server.base + path, **kwargs) as response:
                    return response.status, await response.json(content_type=None)

            assert (await call(a, "PUT", "/v2/models/iris", data=form(iris_models["joblib"])))[0] == 201

            async def predicts_on_b():
                status, body = await call(b, "POST", "/v2/models/iris/predict/", json=ROW)
                return status == 200 and body

            assert (await eventually(predicts_on_b))["predictions"]["label"] == "setosa"
            # before: a training and an asynchronous prediction that finish on A, seen from B
            _, before = await call(a, "POST", train, json={"steps": 2, "step_seconds": 0.05})
            _, async_before = await call(a, "POST", echo)

            async def both_done_on_b():
                first = (await call(b, "GET", f"{train}{before['uuid']}"))[1]
                second = (await call(b, "GET", f"/v2/models/echobench/predictions/{async_before['uuid']}"))[1]
                return first.get("status") == "done" and second.get("status") == "done"

            await eventually(both_done_on_b)
            # during: a long training on A, running when A is killed
            _, during = await call(a, "POST", train, json={"steps": 400, "step_seconds": 0.25})

            async def running_and_logging_on_b():
                status = (await call(b, "GET", f"{train}{during['uuid']}"))[1].get("status")
                log = await (await http.get(f"{b.base}{train}{during['uuid']}/log")).text()
                return status == "running" and "print: step 2/400" in log

            await eventually(running_and_logging_on_b)
            a.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()

            async def interrupted_on_b():
                body = (await call(b, "GET", f"{train}{during['uuid']}"))[1]
                return body.get("status") == "interrupted" and body

            ended = await eventually(interrupted_on_b, timeout=LEASE * 4, what="the survivor to end the job")
            assert time.monotonic() - killed <= LEASE * 4
            print(
                f"\nSIGKILL of replica A -> its running training 'interrupted' on B after "
                f"{time.monotonic() - killed:.1f} s (--job-lease {LEASE:g} s)"
            )
            assert "stopped answering" in ended["message"]
            # after: B serves new jobs; the earlier ones are as they were
            _, after = await call(b, "POST", train, json={"steps": 2, "step_seconds": 0.05})

            async def after_done():
                return (await call(b, "GET", f"{train}{after['uuid']}"))[1].get("status") == "done"

            await eventually(after_done)
            _, listed = await call(b, "GET", train)
            assert {j["uuid"]: j["status"] for j in listed} == {
                before["uuid"]: "done",
                during["uuid"]: "interrupted",
                after["uuid"]: "done",
            }
            log = await (await http.get(f"{b.base}{train}{during['uuid']}/log")).text()
            assert log.count("print: step 1/400") == 1  # it ran once, on A; its log reached the store
    finally:
        a.kill()
        b.kill()


async def test_two_replicas_uploading_one_name_at_once_never_answer_500(replicas, iris_models):
    a, b = await replicas(model_name=("echobench",), executor="thread")
    for round_ in range(3):
        name = f"race{round_}"
        answers = await asyncio.gather(
            a.put(f"/v2/models/{name}", data=form(iris_models["joblib"])),
            b.put(f"/v2/models/{name}", data=form(iris_models["joblib"])),
        )
        statuses = sorted(r.status for r in answers)
        assert statuses in ([200, 201], [201, 409]), [await r.text() for r in answers]
        for response in answers:
            if response.status == 409:
                assert "another replica" in (await response.json())["message"]

        async def served_on_both():
            done = [await c.post(f"/v2/models/{name}/predict/", json=ROW) for c in (a, b)]
            return all(r.status == 200 for r in done)

        await eventually(served_on_both)
