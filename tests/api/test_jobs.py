"""Durable jobs in a live app: training queue, cancel, progress, logs, asynchronous
predictions, retention, callbacks, and every bad input answered with a JSON 4xx."""

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web

from support.polling import finished, wait_for

pytestmark = pytest.mark.stores("sqlite", "postgresql")  # the same suite on each store

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


async def test_trainings_queue_first_in_first_out(serve, plugins):
    plugins.install("slow")
    client = await serve("slow", max_concurrent_trainings=1)
    jobs = [await (await client.post("/v2/models/slow/train/", json={"seconds": s})).json() for s in (0.8, 0.1, 0.1)]
    assert [j["status"] for j in jobs] == ["running", "queued", "queued"]
    assert [j.get("queue_position") for j in jobs] == [None, 1, 2]
    done = [await wait_for(client, f"/v2/models/slow/train/{j['uuid']}", finished) for j in jobs]
    assert [d["status"] for d in done] == ["done"] * 3
    starts = [d["started"] for d in done]
    assert starts == sorted(starts)
    assert done[1]["started"] >= done[0]["finish_date"]  # one at a time


async def test_cancel_a_queued_training(serve, plugins):
    plugins.install("slow")
    client = await serve("slow")
    first = await (await client.post("/v2/models/slow/train/", json={"seconds": 30})).json()
    second = await (await client.post("/v2/models/slow/train/", json={"seconds": 0.1})).json()
    cancelled = await client.delete(f"/v2/models/slow/train/{second['uuid']}")
    assert cancelled.status == 200
    body = await cancelled.json()
    assert body["status"] == "cancelled" and body["message"] == "cancelled by request before it started"
    assert "started" not in body
    running = await client.delete(f"/v2/models/slow/train/{first['uuid']}")
    assert (await running.json())["status"] == "cancelled"
    listed = await (await client.get("/v2/models/slow/train/?status=cancelled")).json()
    assert {j["uuid"] for j in listed} == {first["uuid"], second["uuid"]}


async def test_progress_and_logs_while_training(serve, plugins):
    plugins.install("chatty", fixture="chatty_trainer")
    client = await serve("chatty")
    job = await (await client.post("/v2/models/chatty/train/", json={"steps": 4, "step_seconds": 0.4})).json()
    url = f"/v2/models/chatty/train/{job['uuid']}"
    midway = await wait_for(client, url, lambda b: 0 < (b.get("progress") or 0) < 1)
    assert midway["status"] == "running"
    assert midway["progress_message"].startswith("step ")
    log = await client.get(f"{url}/log")
    assert log.status == 200 and log.content_type == "text/plain"
    early = await log.text()
    assert "print: step 1/4" in early and log.headers["X-Job-Status"] == "running"
    done = await wait_for(client, url, finished)
    assert done["status"] == "done" and done["progress"] == 1.0
    full = await (await client.get(f"{url}/log")).text()
    for line in ("print: step 4/4", "logging: step 4", "stderr: step 4", "fd1: step 4"):
        assert line in full, line
    size = len(full.encode())
    tail = await client.get(f"{url}/log?offset={size - 12}")
    assert await tail.text() == full[-12:] and tail.headers["X-Log-Size"] == str(size)
    assert job["links"]["log"] == f"{url}/log"


async def test_asynchronous_prediction_gives_the_synchronous_body(serve):
    client = await serve("irisbench")
    submitted = await client.post("/v2/models/irisbench/predictions/", json=IRIS)
    assert submitted.status == 202
    job = await submitted.json()
    assert submitted.headers["Location"] == f"/v2/models/irisbench/predictions/{job['id']}"
    assert job["status"] in ("queued", "running")
    done = await wait_for(client, submitted.headers["Location"], finished)
    assert done["status"] == "done"
    direct = await (await client.post("/v2/models/irisbench/predict/", json=IRIS)).json()
    strip = lambda body: {k: v for k, v in body["predictions"].items() if k != "pid"}  # noqa: E731
    assert strip(done["result"]) == strip(direct)
    result = await client.get(done["links"]["result"])
    assert strip(await result.json()) == strip(direct)


async def test_asynchronous_prediction_with_a_file_result(serve):
    client = await serve("demo", executor="thread")
    job = await (
        await client.post("/v2/models/demo/predictions/", json={"values": [1, 2, 3]}, headers={"Accept": "image/png"})
    ).json()
    done = await wait_for(client, f"/v2/models/demo/predictions/{job['id']}", finished)
    assert done["status"] == "done" and done["result_type"] == "image/png" and "result" not in done
    image = await client.get(done["links"]["result"])
    assert image.content_type == "image/png" and (await image.read()).startswith(b"\x89PNG")


@pytest.mark.slow
async def test_asynchronous_prediction_errors_and_cancel(serve, plugins):
    plugins.install("failing")
    plugins.install("slow")
    client = await serve("failing", "slow")
    job = await (await client.post("/v2/models/failing/predictions/", json={"how": "value"})).json()
    done = await wait_for(client, f"/v2/models/failing/predictions/{job['id']}", finished)
    assert done["status"] == "error" and done["error_status"] == 500
    assert "ValueError: asked to fail" in done["message"]
    result = await client.get(f"/v2/models/failing/predictions/{job['id']}/result")
    assert result.status == 409  # it exists, and failed: not a 404
    body = await result.json()
    assert "failed, so it has no result" in body["message"] and "asked to fail" in body["error"]
    assert body["status"] == "error" and body["error_status"] == 500
    long = await (await client.post("/v2/models/slow/predictions/", json={"seconds": 4})).json()
    await asyncio.sleep(0.3)
    cancelled = await client.delete(f"/v2/models/slow/predictions/{long['id']}")
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    assert (await client.post("/v2/models/slow/predict/", json={"seconds": 0})).status == 200


async def test_bad_job_requests_are_json_4xx(serve, plugins):
    plugins.install("slow")
    client = await serve("slow", "irisbench", executor="thread")
    cases = [
        ("POST", "/v2/models/irisbench/predictions/", {"json": {**IRIS, "sepal_length": "x"}}, 422, "sepal_length"),
        ("POST", "/v2/models/irisbench/predictions/", {"json": {**IRIS, "colour": 1}}, 422, "colour"),
        (
            "POST",
            "/v2/models/irisbench/predictions/",
            {"json": {**IRIS, "callback_url": "ftp://x"}},
            422,
            "callback_url",
        ),
        ("POST", "/v2/models/irisbench/train/", {"json": {"n_estimators": 0}}, 422, "n_estimators"),
        ("GET", "/v2/models/irisbench/predictions/nope", {}, 404, "Prediction 'nope'"),
        ("DELETE", "/v2/models/irisbench/predictions/nope", {}, 404, "Prediction 'nope'"),
        ("GET", "/v2/models/irisbench/train/nope/log", {}, 404, "Training 'nope'"),
        ("GET", "/v2/models/irisbench/train/?status=sleeping", {}, 422, "status"),
        ("GET", "/v2/models/irisbench/train/?limit=0", {}, 422, "limit"),
        ("GET", "/v2/models/irisbench/predictions/?offset=-1", {}, 422, "offset"),
        ("GET", "/v2/models/irisbench/predictions/?page=2", {}, 422, "page"),
        ("GET", "/v2/models/nobody/predictions/", {}, 404, "Model 'nobody' not found"),
        (
            "POST",
            "/v2/models/irisbench/predictions/",
            {"data": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "Malformed JSON",
        ),
    ]
    for method, path, kwargs, status, text in cases:
        response = await client.request(method, path, **kwargs)
        assert response.status == status, (method, path, await response.text())
        assert text in await response.text(), (method, path)
    assert await (await client.get("/v2/models/irisbench/predictions/")).json() == []  # nothing was created
    job = await (await client.post("/v2/models/slow/predictions/", json={"seconds": 0})).json()
    await wait_for(client, f"/v2/models/slow/predictions/{job['id']}", finished)
    again = await client.delete(f"/v2/models/slow/predictions/{job['id']}")
    assert again.status == 409 and "already finished (done)" in (await again.json())["message"]
    # the training uuid is not a prediction id, and the other way round
    assert (await client.get(f"/v2/models/slow/train/{job['id']}")).status == 404


async def test_listing_filters_and_pages(serve):
    client = await serve("echobench", executor="thread")
    query = "sepal_length=1&sepal_width=1&petal_length=1&petal_width=1"
    ids = [(await (await client.post(f"/v2/models/echobench/predictions/?{query}")).json())["id"] for _ in range(5)]
    for job_id in ids:
        await wait_for(client, f"/v2/models/echobench/predictions/{job_id}", finished)
    page = await client.get("/v2/models/echobench/predictions/?limit=2&offset=1&status=done")
    assert page.headers["X-Total-Count"] == "5"
    assert [j["id"] for j in await page.json()] == ids[1:3]


async def test_retention_removes_old_predictions_and_their_files(serve, make_settings):
    client = await serve("demo", executor="thread", prediction_retention=1.0)
    job = await (await client.post("/v2/models/demo/predictions/", headers={"Accept": "image/png"})).json()
    url = f"/v2/models/demo/predictions/{job['id']}"
    await wait_for(client, url, finished)
    settings = make_settings()
    job_dir = Path(settings.data_dir) / "jobs" / job["id"]
    # the file answer: in the job's directory; with replicas, in the shared artifact directory
    result = (
        settings.artifacts_dir / "results" / job["id"]
        if settings.store.startswith("postgresql")
        else job_dir / "result"
    )
    assert result.read_bytes().startswith(b"\x89PNG")
    deadline = time.monotonic() + 10
    while (await client.get(url)).status != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert not job_dir.exists() and not result.exists()


@pytest.fixture
async def receiver(aiohttp_server):
    """A callback receiver on 127.0.0.1: records what it gets, fails on demand."""
    received: list[dict] = []
    state = {"fail": 0}

    async def handler(request):
        received.append(await request.json())
        if state["fail"] > 0:
            state["fail"] -= 1
            raise web.HTTPServiceUnavailable()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return server, received, state


async def test_callback_is_delivered_with_retries(serve, receiver):
    server, received, state = receiver
    state["fail"] = 2
    client = await serve("echobench", executor="thread", callback_backoff=0.05)
    url = f"http://127.0.0.1:{server.port}/hook"
    job = await (await client.post("/v2/models/echobench/predictions/", json={**IRIS, "callback_url": url})).json()
    assert job["callback"] == {"url": url, "status": "pending", "attempts": 0}
    done = await wait_for(
        client,
        f"/v2/models/echobench/predictions/{job['id']}",
        lambda b: b.get("callback", {}).get("status") != "pending",
    )
    assert done["callback"]["status"] == "delivered" and done["callback"]["attempts"] == 3
    assert len(received) == 3
    assert received[-1]["id"] == job["id"] and received[-1]["status"] == "done"
    assert received[-1]["result"]["predictions"]["sepal_length"] == 5.1
    assert "callback_url" not in done["args"]


async def test_callback_failure_is_recorded(serve, receiver):
    server, received, state = receiver
    state["fail"] = 100
    client = await serve("irisbench", executor="thread", callback_backoff=0.02, callback_attempts=3)
    form = {"n_estimators": "3", "callback_url": f"http://127.0.0.1:{server.port}/hook"}
    job = await (await client.post("/v2/models/irisbench/train/", data=form)).json()
    done = await wait_for(
        client, f"/v2/models/irisbench/train/{job['uuid']}", lambda b: b.get("callback", {}).get("status") == "failed"
    )
    assert done["status"] == "done"  # the job itself is not affected
    assert done["callback"]["attempts"] == 3 and "HTTP 503" in done["callback"]["error"]
    assert len(received) == 3
    unreachable = await (
        await client.post(
            "/v2/models/irisbench/predictions/", json={**IRIS, "callback_url": "http://127.0.0.1:9/nothing"}
        )
    ).json()
    failed = await wait_for(
        client,
        f"/v2/models/irisbench/predictions/{unreachable['id']}",
        lambda b: b.get("callback", {}).get("status") == "failed",
    )
    assert "Connect" in failed["callback"]["error"] or "refused" in failed["callback"]["error"]
