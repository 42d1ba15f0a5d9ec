"""Trainings: lifecycle, errors, real cancellation, predictions meanwhile, visibility."""

import asyncio
import io
import multiprocessing.forkserver
import os
import time

import aiohttp
import pytest

from support.polling import finished, wait_for
from support.processes import descendants

pytestmark = pytest.mark.stores("sqlite", "postgresql")  # the same suite on each store


@pytest.mark.slow
async def test_training_lifecycle_deepaas_shapes(serve):
    client = await serve("irisbench")
    started = await client.post("/v2/models/irisbench/train/?n_estimators=5")
    assert started.status == 200
    job = await started.json()
    assert job["status"] == "running"
    assert job["args"] == {"n_estimators": 5, "test_size": 0.3, "seed": 0, "delay_s": 0.0}
    url = f"/v2/models/irisbench/train/{job['uuid']}"
    done = await wait_for(client, url, lambda b: b["status"] != "running")
    assert done["status"] == "done", done
    assert done["result"]["output"]["n_estimators"] == 5
    assert done["result"]["output"]["accuracy"] > 0.5
    assert done["result"]["duration"].startswith("0:00:")
    assert "finish_date" in done["result"]
    listed = await (await client.get("/v2/models/irisbench/train/")).json()
    assert [j["uuid"] for j in listed] == [job["uuid"]]


async def test_training_errors_are_reported_even_for_http_exceptions(serve, plugins):
    plugins.install("failing")
    client = await serve("failing")
    for how, text in (("http", "training data missing"), ("boom", "RuntimeError: training exploded")):
        job = await (await client.post("/v2/models/failing/train/", json={"how": how})).json()
        done = await wait_for(client, f"/v2/models/failing/train/{job['uuid']}", finished)
        assert done["status"] == "error"
        assert text in done["message"]


async def test_invalid_training_arguments(serve):
    client = await serve("irisbench", executor="thread")
    response = await client.post("/v2/models/irisbench/train/", json={"n_estimators": "many"})
    assert response.status == 422
    assert "n_estimators" in (await response.json())["errors"]
    assert await (await client.get("/v2/models/irisbench/train/")).json() == []


async def test_cancel_stops_the_training_process(serve, plugins):
    plugins.install("slow")
    client = await serve("slow")
    job = await (await client.post("/v2/models/slow/train/", json={"seconds": 60})).json()
    await asyncio.sleep(1.0)
    running_pids = _children_running("slow")
    cancelled = await client.delete(f"/v2/models/slow/train/{job['uuid']}")
    assert cancelled.status == 200
    body = await cancelled.json()
    assert body["status"] == "cancelled"
    gone = await wait_for(client, f"/v2/models/slow/train/{job['uuid']}", lambda b: True)
    assert gone["status"] == "cancelled"
    assert len(running_pids) >= 2  # the predict worker and the training process
    survivors = _children_running("slow")
    assert len(survivors) == len(running_pids) - 1
    again = await client.delete(f"/v2/models/slow/train/{job['uuid']}")
    assert again.status == 409
    assert "already finished (cancelled)" in (await again.json())["message"]


def _children_running(model: str) -> set[int]:
    """PIDs of this test process's worker processes (spawned, or forked from the fork server)."""
    helper = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    pids = set()
    for pid in descendants(os.getpid()) - {helper}:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            pids.add(pid)
    return pids


async def test_predictions_are_served_while_training(serve, plugins):
    plugins.install("slow")
    client = await serve("slow")
    job = await (await client.post("/v2/models/slow/train/", json={"seconds": 5})).json()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    response = await client.post("/v2/models/slow/predict/")
    assert response.status == 200
    assert time.monotonic() - started < 3.0  # not queued behind the 5 s training
    meta = await client.get("/v2/models/slow/")
    assert meta.status == 200
    status = await (await client.get(f"/v2/models/slow/train/{job['uuid']}")).json()
    assert status["status"] == "running"


async def test_training_is_visible_to_every_worker(serve, plugins):
    plugins.install("trainer", attr="Trainer")
    client = await serve("trainer", workers=2)
    before = await (await client.post("/v2/models/trainer/predict/")).json()
    assert before["predictions"]["version"] == 0
    old_pids = {before["predictions"]["pid"]}
    job = await (await client.post("/v2/models/trainer/train/", json={"version": 7})).json()
    done = await wait_for(client, f"/v2/models/trainer/train/{job['uuid']}", lambda b: b["status"] != "running")
    assert done["status"] == "done"
    answers = await asyncio.gather(*(client.post("/v2/models/trainer/predict/") for _ in range(20)))
    bodies = [await r.json() for r in answers]
    assert {b["predictions"]["version"] for b in bodies} == {7}
    assert len({b["predictions"]["pid"] for b in bodies}) == 2  # both workers, both new
    assert not old_pids & {b["predictions"]["pid"] for b in bodies}
    meta = await (await client.get("/v2/models/trainer/")).json()
    assert meta["trained_version"] == 7  # metadata is read again after a training


async def test_training_with_an_uploaded_file(serve, plugins, make_settings):
    plugins.install("file-io", fixture="file_io")
    client = await serve("file-io")
    form = aiohttp.FormData()
    form.add_field("data", io.BytesIO(b"0123456789"), filename="train.csv")
    job = await (await client.post("/v2/models/file-io/train/", data=form)).json()
    assert job["args"]["data"] == {
        "name": "data",
        "content_type": "application/octet-stream",
        "original_filename": "train.csv",
    }
    done = await wait_for(client, f"/v2/models/file-io/train/{job['uuid']}", lambda b: b["status"] != "running")
    assert done["status"] == "done", done
    output = done["result"]["output"]
    assert output["size"] == 10
    inputs = os.path.join(make_settings().data_dir, "jobs", job["uuid"], "inputs")
    assert output["path"].startswith(inputs)  # kept with the job while it needed them
    assert not os.path.exists(output["path"])  # removed when the training ended
