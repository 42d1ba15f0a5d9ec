"""Replicas through an outage of their PostgreSQL: nothing finished is lost, no status
changes once final, a live replica is never taken for gone, and a job or model made on
one replica is found at once on another. Each test has a PostgreSQL of its own, which it
stops and starts."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from deepaas_like.api import create_app
from support.helpers import store_rows, wait_ready
from support.postgres import start_postgres
from support.registry import ROW, form

LEASE = 2.0
ECHO = {"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}


@pytest.fixture
def cluster():
    server = start_postgres(durable=True)  # its outage is a crash (pg_ctl -m immediate): what it acknowledged stays
    yield server
    server.stop()


@pytest.fixture
def two_replicas(aiohttp_client, make_settings, tmp_path, cluster):
    async def start(**overrides):
        store = cluster.new_database()
        clients = []
        for i in range(2):
            settings = make_settings(
                data_dir=str(tmp_path / f"replica{i}"),
                artifact_dir=str(tmp_path / "artifacts"),
                auth_key_file=str(tmp_path / "auth.key"),
                job_lease=LEASE,
                store=store,
                model_name=("echobench",),
                **overrides,
            )
            client = await aiohttp_client(create_app(settings))
            await wait_ready(client)
            clients.append(client)
        return (*clients, store)

    return start


async def outage(cluster, seconds: float) -> None:
    await asyncio.to_thread(cluster.pause)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(cluster.resume)


async def statuses(client, ids: list[str]) -> dict[str, str]:
    found = {}
    for job_id in ids:
        response = await client.get(f"/v2/models/echobench/predictions/{job_id}")
        found[job_id] = (await response.json())["status"] if response.status == 200 else str(response.status)
    return found


async def until(check, timeout: float, what: str, show=None):
    """Poll ``check()`` until it is truthy; ``show()`` says what was seen, if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}" + (f"; last seen: {await show()}" if show else ""))
        await asyncio.sleep(0.2)


async def test_jobs_finished_during_an_outage_are_kept_and_agree_everywhere(two_replicas, cluster, tmp_path):
    a, b, store = await two_replicas(executor="thread", workers=4)
    ids = []
    for _ in range(48):
        response = await a.post("/v2/models/echobench/predictions/", json={**ECHO, "mode": "sleep", "sleep_ms": 150})
        assert response.status == 202, await response.text()
        ids.append((await response.json())["id"])
    await asyncio.sleep(0.3)
    down = asyncio.create_task(outage(cluster, 3.0))
    await asyncio.sleep(0.5)
    during = await a.post("/v2/models/echobench/predictions/", json=ECHO)  # nothing can be made durable now
    assert during.status == 503 and "Retry-After" in during.headers, await during.text()
    assert "127.0.0.1" not in await during.text() and str(cluster.port) not in await during.text()
    await down

    async def everywhere():
        on_a, on_b = await statuses(a, ids), await statuses(b, ids)
        rows = dict(store_rows(tmp_path, store, "SELECT id, status FROM jobs"))
        return {job_id: (on_a[job_id], on_b[job_id], rows.get(job_id)) for job_id in ids}

    async def settled():
        return all(set(found) == {"done"} for found in (await everywhere()).values())

    async def seen():
        found = await everywhere()
        return collections.Counter(found.values()), [i for i, f in found.items() if set(f) != {"done"}]

    await until(settled, 30, "every job to be done on both replicas and in the store", seen)
    for client in (a, b):
        for job_id in ids[::7]:
            result = await client.get(f"/v2/models/echobench/predictions/{job_id}/result")
            assert result.status == 200, await result.text()
    await asyncio.sleep(LEASE * 2)  # and it stays so: nobody changes a final status later
    assert set((await statuses(b, ids)).values()) == {"done"}
    assert not (tmp_path / "replica0" / "outbox.json").exists()


async def test_a_store_outage_longer_than_the_lease_does_not_interrupt_a_live_replicas_training(
    two_replicas, cluster, tmp_path
):
    a, b, store = await two_replicas(executor="thread")
    started = await a.post("/v2/models/echobench/train/", json={"delay_s": 6})
    assert started.status == 200, await started.text()
    uuid = (await started.json())["uuid"]
    await asyncio.sleep(0.5)
    await outage(cluster, 2.5 * LEASE)

    async def training(client):
        return (await (await client.get(f"/v2/models/echobench/train/{uuid}")).json())["status"]

    await until(lambda: _all_equal(training, (a, b), "done"), 30, "the training to end done on both")
    assert store_rows(tmp_path, store, f"SELECT status FROM jobs WHERE id = '{uuid}'") == [("done",)]


async def _all_equal(read, clients, value) -> bool:
    return all([await read(client) == value for client in clients])


async def test_what_one_replica_makes_the_other_finds_at_once(two_replicas, iris_models):
    a, b, _ = await two_replicas(executor="thread")
    for _ in range(5):
        submitted = await a.post("/v2/models/echobench/predictions/", json={**ECHO, "mode": "sleep", "sleep_ms": 3000})
        job = await submitted.json()
        seen = await b.get(f"/v2/models/echobench/predictions/{job['id']}")
        assert seen.status == 200, await seen.text()
        cancelled = await b.delete(f"/v2/models/echobench/predictions/{job['id']}")
        assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled", await cancelled.text()
    uploaded = await a.put("/v2/models/fresh", data=form(iris_models["skops"]))
    assert uploaded.status == 201
    assert (await b.get("/v2/models/fresh/")).status == 200
    predicted = await b.post("/v2/models/fresh/predict/", json=ROW)
    assert predicted.status == 200, await predicted.text()


async def test_a_replica_restarted_after_an_outage_writes_what_it_kept(
    two_replicas, cluster, tmp_path, aiohttp_client, make_settings
):
    a, b, store = await two_replicas(executor="thread", workers=4)
    ids = []  # made just before the outage, ending during it
    for _ in range(12):
        response = await a.post("/v2/models/echobench/predictions/", json={**ECHO, "mode": "sleep", "sleep_ms": 400})
        ids.append((await response.json())["id"])
    await asyncio.to_thread(cluster.pause)
    await until(lambda: _locally_done(a, ids), 20, "the jobs to end on A during the outage")
    await a.close()  # a clean stop while the store is away: the ends wait in A's outbox, on disk
    assert (tmp_path / "replica0" / "outbox.json").exists()
    await asyncio.to_thread(cluster.resume)
    again = make_settings(
        data_dir=str(tmp_path / "replica0"),
        artifact_dir=str(tmp_path / "artifacts"),
        auth_key_file=str(tmp_path / "auth.key"),
        job_lease=LEASE,
        store=store,
        model_name=("echobench",),
        executor="thread",
    )
    restarted = await aiohttp_client(create_app(again))
    await wait_ready(restarted)
    rows = dict(store_rows(tmp_path, store, "SELECT id, status FROM jobs"))
    assert {rows[job_id] for job_id in ids} == {"done"}
    assert not (tmp_path / "replica0" / "outbox.json").exists()
    assert set((await statuses(restarted, ids)).values()) == {"done"}
    await until(lambda: _locally_done(b, ids), 5, "the other replica to mirror what was kept")  # its next look
    for client in (restarted, b):
        result = await client.get(f"/v2/models/echobench/predictions/{ids[0]}/result")
        assert result.status == 200, await result.text()


async def _locally_done(client, ids) -> bool:
    return set((await statuses(client, ids)).values()) == {"done"}
