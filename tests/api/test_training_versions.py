"""Trainings become versions: a plugin's storage_dir() kept after each training, listed,
downloaded, switched back to (under load, with no failed request), pruned, kept across a
restart; who may switch; and what a crash in a switch leaves."""

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest

from deepaas_like.api import create_app
from deepaas_like.jobs.snapshots import SnapshotStore
from support.auth import bearer, mint
from support.helpers import wait_ready
from support.polling import finished, wait_for

# A plugin whose train() writes its weights (and a file that never changes) into storage_dir(),
# and whose predict() answers with the weights warm() read from there.
WEIGHTS = """
import json
import os
import time

from deepaas_like import storage_dir
from webargs import fields


class Weights:
    def __init__(self):
        self.weights = None

    def get_metadata(self):
        return {"name": "weights", "description": "Answers with the weights it warmed from"}

    def warm(self):
        path = storage_dir() / "weights.json"
        self.weights = json.loads(path.read_text()) if path.exists() else None
        if self.weights == 13:
            raise RuntimeError("unlucky weights")

    def get_predict_args(self):
        return {}

    def predict(self):
        return {"weights": self.weights, "pid": os.getpid()}

    def get_train_args(self):
        return {"value": fields.Int(required=True), "seconds": fields.Float(load_default=0.0)}

    def train(self, value, seconds):
        time.sleep(seconds)
        folder = storage_dir()
        (folder / "weights.json").write_text(json.dumps(value))
        (folder / "vocabulary.txt").write_text("the same words every time\\n" * 1000)
        (folder / "nested").mkdir(exist_ok=True)
        (folder / "nested" / "config.txt").write_text(f"value={value}")
        return {"value": value, "loss": 1.0 / value}
"""
MODEL = "/v2/models/weights"


@pytest.fixture
def weights(plugins):
    plugins.install("weights", source=WEIGHTS, attr="Weights")


async def train(client, value: int, **headers: str) -> dict:
    started = await client.post(f"{MODEL}/train/", json={"value": value}, headers=headers)
    assert started.status == 200, await started.text()
    job = await started.json()
    while not finished(job):
        await asyncio.sleep(0.05)
        job = await (await client.get(f"{MODEL}/train/{job['uuid']}", headers=headers)).json()
    assert job["status"] == "done", job
    return job


async def predicted(client) -> object:
    response = await client.post(f"{MODEL}/predict/")
    assert response.status == 200, await response.text()
    return (await response.json())["predictions"]["weights"]


async def listed(client) -> dict:
    response = await client.get(f"{MODEL}/versions/")
    assert response.status == 200, await response.text()
    return await response.json()


def store_of(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "data" / "models" / ".versions" / "weights", "weights")


def blob_count(store: SnapshotStore) -> int:
    return sum(1 for folder in store.blob_dir.iterdir() for _ in folder.iterdir())


async def test_trainings_become_versions_switch_back_and_download(serve, weights, tmp_path):
    client = await serve("weights")
    before = await listed(client)  # never trained: its one version, 1, not recorded yet
    assert [(v["version"], v["recorded"], v["current"]) for v in before["versions"]] == [(1, False, True)]
    assert (await client.get(f"{MODEL}/versions/1/download")).status == 404

    first = await train(client, 1)
    second = await train(client, 2)
    body = await listed(client)
    versions = body["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3] and body["current_version"] == 3
    assert versions[0]["source"]["kind"] == "installed" and versions[0]["file_count"] == 0
    for version, job, value in ((versions[1], first, 1), (versions[2], second, 2)):
        source = version["source"]
        assert source["kind"] == "training" and source["training"] == job["uuid"]
        assert source["arguments"] == {"value": value, "seconds": 0.0}
        assert source["result"] == {"value": value, "loss": 1.0 / value}
        assert source["log"].endswith(f"/train/{job['uuid']}/log") and version["links"]["log"] == source["log"]
        assert version["file_count"] == 3 and version["status"] == "ready"
    assert [v["current"] for v in versions] == [False, False, True]
    assert (await client.get(versions[2]["links"]["log"])).status == 200

    # Deduplicated: the vocabulary is stored once for both trainings; the others once each.
    store = store_of(tmp_path)
    assert blob_count(store) == 1 + 2 + 2
    manifests = [store.snapshot(n) for n in (2, 3)]
    assert manifests[0].files["vocabulary.txt"] == manifests[1].files["vocabulary.txt"]

    assert await predicted(client) == 2
    doc = await (await client.get(f"{MODEL}/")).json()
    assert doc["current_version"] == 3 and doc["versions"] == ["3"]

    switched = await client.patch(MODEL, json={"current_version": 2})
    assert switched.status == 200, await switched.text()
    assert (await switched.json())["current_version"] == 2
    assert all([await predicted(client) == 1 for _ in range(4)])  # every worker warmed from version 2
    assert json.loads((tmp_path / "data" / "models" / "weights" / "weights.json").read_text()) == 1
    one = await (await client.get(f"{MODEL}/versions/2")).json()
    assert one["current"] is True and one["version"] == 2 and one["versions"] == ["2"]
    assert (await (await client.get(f"{MODEL}/")).json())["current_version"] == 2
    assert (await client.get(f"{MODEL}/versions/2/ready")).status == 200  # the protocol serves it
    assert (await client.get(f"{MODEL}/versions/3/ready")).status == 404

    download = await client.get(f"{MODEL}/versions/3/download")
    assert download.status == 200 and download.content_type == "application/x-tar"
    assert "weights-v3.tar" in download.headers["Content-Disposition"]
    data = await download.read()
    assert int(download.headers["Content-Length"]) == len(data)
    head = await client.head(f"{MODEL}/versions/3/download")
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(data) and await head.read() == b""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert {m.name for m in tar.getmembers() if m.isdir()} == {"nested"}
    assert files == {
        "weights.json": b"2",
        "vocabulary.txt": b"the same words every time\n" * 1000,
        "nested/config.txt": b"value=2",
    }
    assert not list(store.root.glob("incoming-*")) and not list(store.root.glob("outgoing-*"))

    # A training after a switch starts from the version switched to, and is the next version.
    await train(client, 5)
    assert [v["version"] for v in (await listed(client))["versions"]] == [1, 2, 3, 4]
    assert await predicted(client) == 5


async def test_back_to_the_state_before_any_training(serve, weights, tmp_path):
    client = await serve("weights")
    await train(client, 3)
    assert (await client.patch(MODEL, json={"current_version": 1})).status == 200
    assert await predicted(client) is None
    assert list((tmp_path / "data" / "models" / "weights").iterdir()) == []


@pytest.mark.parametrize("executor", ["process", "thread"])
async def test_switching_under_load_fails_no_request(serve, weights, executor):
    client = await serve("weights", workers=2, executor=executor)
    await train(client, 1)
    await train(client, 2)
    answers: list[int] = []
    seen: set[object] = set()
    switching = True

    async def load() -> None:
        while switching:
            response = await client.post(f"{MODEL}/predict/")
            answers.append(response.status)
            if response.status == 200:
                seen.add((await response.json())["predictions"]["weights"])

    clients = [asyncio.create_task(load()) for _ in range(4)]
    try:
        for number in (2, 3, 2, 3, 2):
            response = await client.patch(MODEL, json={"current_version": number})
            assert response.status == 200, await response.text()
    finally:
        switching = False
        await asyncio.gather(*clients)
    assert len(answers) > 20 and set(answers) == {200}, sorted(set(answers))
    assert seen == {1, 2}
    assert await predicted(client) == 1


async def test_retention_keeps_the_newest_the_current_and_the_first(serve, weights, tmp_path):
    client = await serve("weights", keep_training_versions=2)
    for value in (1, 2, 3):
        await train(client, value)
    body = await listed(client)
    assert [v["version"] for v in body["versions"]] == [1, 3, 4] and body["current_version"] == 4
    store = store_of(tmp_path)
    assert blob_count(store) == 1 + 2 + 2  # version 2's own files are collected
    gone = await client.patch(MODEL, json={"current_version": 2})
    assert gone.status == 404 and "has no version 2" in (await gone.json())["message"]
    assert (await client.get(f"{MODEL}/versions/2")).status == 404
    assert (await client.get(f"{MODEL}/versions/2/download")).status == 404
    # Numbers are never given twice: after a switch back, the next training is the next number.
    assert (await client.patch(MODEL, json={"current_version": 3})).status == 200
    await train(client, 4)
    assert [v["version"] for v in (await listed(client))["versions"]] == [1, 4, 5]


async def test_bad_switches_are_refused_with_json(serve, weights):
    client = await serve("weights")
    await train(client, 1)
    for body, status, field in (
        ({"current_version": 9}, 404, None),
        ({"current_version": "two"}, 422, "current_version"),
        ({"current_version": 1.5}, 422, "current_version"),
        ({"current_version": True}, 422, "current_version"),
        ({"current_version": 0}, 422, "current_version"),
        ({}, 422, "current_version"),
        ({"current_version": 1, "is_public": True}, 422, "is_public"),
    ):
        response = await client.patch(MODEL, json=body)
        answer = await response.json()
        assert response.status == status and answer["message"], (body, answer)
        if field:
            assert field in answer["errors"], (body, answer)
    assert (await client.patch(MODEL, data=b"[1]", headers={"Content-Type": "application/json"})).status in (
        400,
        422,
    )
    assert (await client.get(f"{MODEL}/versions/x")).status == 422
    assert (await listed(client))["current_version"] == 2

    # While a training runs, a switch is refused: the training writes into the storage_dir.
    started = await client.post(f"{MODEL}/train/", json={"value": 7, "seconds": 60})
    job = await started.json()
    await wait_for(client, f"{MODEL}/train/", lambda jobs: jobs[-1]["status"] == "running")
    busy = await client.patch(MODEL, json={"current_version": 1})
    assert busy.status == 409 and "training" in (await busy.json())["message"]
    assert (await client.delete(f"{MODEL}/train/{job['uuid']}")).status == 200
    assert (await client.patch(MODEL, json={"current_version": 1})).status == 200
    assert [v["version"] for v in (await listed(client))["versions"]] == [1, 2]  # a cancelled one is no version


async def test_a_version_that_does_not_warm_is_refused_and_the_previous_serves_on(serve, weights, tmp_path):
    client = await serve("weights")
    await train(client, 1)
    started = await client.post(f"{MODEL}/train/", json={"value": 13})
    job = await wait_for(client, f"{MODEL}/train/{(await started.json())['uuid']}", finished)
    assert job["status"] == "error" and "could not be warmed again" in job["message"]
    body = await listed(client)  # what the folder holds is version 3, whose workers do not warm
    assert [v["version"] for v in body["versions"]] == [1, 2, 3] and body["current_version"] == 3
    assert await predicted(client) == 1  # the workers before it serve on
    assert (await client.patch(MODEL, json={"current_version": 2})).status == 200  # the way out
    refused = await client.patch(MODEL, json={"current_version": 3})
    answer = await refused.json()
    assert refused.status == 422 and "does not warm" in answer["message"] and answer["current_version"] == 2
    assert await predicted(client) == 1
    assert (await listed(client))["current_version"] == 2
    assert (tmp_path / "data" / "models" / "weights" / "weights.json").read_text() == "1"
    assert not [p for p in store_of(tmp_path).root.iterdir() if p.name.startswith(("incoming-", "outgoing-"))]


async def test_a_restart_keeps_the_versions_and_the_current_one(aiohttp_client, make_settings, weights):
    settings = make_settings(model_name=("weights",))
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client)
    await train(client, 1)
    await train(client, 2)
    assert (await client.patch(MODEL, json={"current_version": 2})).status == 200
    before = await listed(client)
    await client.close()

    again = await aiohttp_client(create_app(settings))
    await wait_ready(again)
    assert await listed(again) == before
    assert await predicted(again) == 1
    assert (await (await again.get(f"{MODEL}/")).json())["current_version"] == 2


async def test_who_may_switch(aiohttp_client, make_settings, weights, tmp_path):
    data_dir = tmp_path / "data"
    predictor = mint(data_dir, "--name", "p", "--scope", "models:predict")
    trainer = mint(data_dir, "--name", "t", "--scope", "models:train", "--scope", "models:read")
    writer = mint(data_dir, "--name", "w", "--scope", "models:write", "--scope", "models:read")
    client = await aiohttp_client(create_app(make_settings(model_name=("weights",), auth=True)))
    await wait_ready(client)
    await train(client, 1, **bearer(trainer))
    await train(client, 2, **bearer(trainer))
    assert (await client.patch(MODEL, json={"current_version": 2})).status == 401
    for token in (predictor, trainer):  # predicting or training is not choosing what serves
        refused = await client.patch(MODEL, json={"current_version": 2}, headers=bearer(token))
        assert refused.status == 403 and "models:write" in (await refused.json())["message"]
    assert (await client.get(f"{MODEL}/versions/", headers=bearer(predictor))).status == 403
    assert (await client.get(f"{MODEL}/versions/2/download", headers=bearer(predictor))).status == 403
    assert (await client.get(f"{MODEL}/versions/", headers=bearer(trainer))).status == 200
    assert (await client.post(f"{MODEL}/predict/", headers=bearer(predictor))).status == 200
    assert (await (await client.post(f"{MODEL}/predict/", headers=bearer(predictor))).json())["predictions"][
        "weights"
    ] == 2
    allowed = await client.patch(MODEL, json={"current_version": 2}, headers=bearer(writer))
    assert allowed.status == 200, await allowed.text()
    assert (await (await client.post(f"{MODEL}/predict/", headers=bearer(predictor))).json())["predictions"][
        "weights"
    ] == 1


def test_a_switch_cut_short_is_finished_at_the_next_start(tmp_path):
    """A crash after the journal, at each step of the swap: recover() leaves the storage_dir
    whole at the version the journal names, and no tree behind."""
    for crash_after in ("journal", "moved out"):
        root = tmp_path / crash_after
        storage = root / "models" / "m"
        storage.mkdir(parents=True)
        (storage / "w.txt").write_text("one")
        store = SnapshotStore(root / "models" / ".versions" / "m", "m")
        with store.locked():
            store.record(storage, {"kind": "installed"})
            (storage / "w.txt").write_text("two")
            (storage / "extra.txt").write_text("x")
            store.set_current(store.record(storage, {"kind": "training"}).number)
            tree = store.build(store.snapshot(1))
            (store.root / "switch.json").write_text(
                json.dumps({"version": 1, "incoming": tree.name, "outgoing": "outgoing-x"})
            )
            if crash_after == "moved out":
                storage.rename(store.root / "outgoing-x")
            store.recover(storage)
        assert sorted(p.name for p in storage.iterdir()) == ["w.txt"] and (storage / "w.txt").read_text() == "one"
        assert store.current() == 1
        assert sorted(p.name for p in store.root.iterdir()) == ["blobs", "current", "lock", "versions"]


@pytest.mark.stores("postgresql")
async def test_replicas_share_the_versions_and_follow_a_switch(aiohttp_client, make_settings, weights, tmp_path, store):
    """Two replicas on one PostgreSQL and one artifact directory: the versions a training on
    one records are listed by both; a switch on either is served by both; a training that
    runs on one makes a switch on the other a 409."""
    a, b = [
        await aiohttp_client(
            create_app(
                make_settings(
                    model_name=("weights",),
                    data_dir=str(tmp_path / f"replica{i}"),
                    artifact_dir=str(tmp_path / "artifacts"),
                    auth_key_file=str(tmp_path / "auth.key"),
                )
            )
        )
        for i in range(2)
    ]
    for client in (a, b):
        await wait_ready(client)
    await train(a, 1)
    await train(a, 2)

    async def serves(client, value) -> bool:
        return await predicted(client) == value

    await eventually(lambda: serves(b, 2))
    assert [v["version"] for v in (await listed(b))["versions"]] == [1, 2, 3]
    assert (await b.patch(MODEL, json={"current_version": 2})).status == 200
    assert await predicted(b) == 1
    await eventually(lambda: serves(a, 1))
    assert (await (await a.get(f"{MODEL}/")).json())["current_version"] == 2
    assert (tmp_path / "artifacts" / "models" / ".versions" / "weights" / "current").read_text().strip() == "2"

    job = await (await a.post(f"{MODEL}/train/", json={"value": 9, "seconds": 60})).json()

    async def running_on_b() -> bool:
        response = await b.get(f"{MODEL}/train/{job['uuid']}")
        return response.status == 200 and (await response.json())["status"] == "running"

    await eventually(running_on_b)
    busy = await b.patch(MODEL, json={"current_version": 3})
    assert busy.status == 409, await busy.text()
    assert (await b.delete(f"{MODEL}/train/{job['uuid']}")).status == 200


async def eventually(check, timeout: float = 30.0) -> None:
    """Poll ``check()`` until it holds (another replica catching up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the other replica did not catch up"
        await asyncio.sleep(0.1)
