"""``--executor ray``: model workers are Ray actors on a local Ray head (127.0.0.1, 2 CPUs);
aiohttp stays the front door, so the DEEPaaS and OIP routes answer as with processes."""

import asyncio
import os
import signal
import time

import pytest

from deepaas_like.api.keys import MODELS
from support.helpers import wait_ready
from support.polling import finished, wait_for
from support.processes import Server, alive, descendants
from support.registry import ROW, form

ray = (
    pytest.importorskip("ray", reason="the ray extra is not installed")
    if not os.environ.get("DEEPAAS_LIKE_CI")
    else __import__("ray")
)

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ECHO = "/v2/models/echobench/predict/?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head for the module: 2 CPUs, on 127.0.0.1, no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


async def test_predictions_run_in_ray_actors_behind_the_same_routes(serve, ray_head):
    import irisbench.api

    client = await serve("irisbench", "echobench", executor="ray", workers=2, ray_num_cpus=0.5)
    ready = await (await client.get("/v2/health/ready")).json()
    assert ready["models"]["irisbench"]["executor"] == "ray"
    assert ready["models"]["irisbench"]["workers"] == 2
    irisbench.api.warm()
    expected = irisbench.api.predict(**IRIS, top_k=3)
    body = await (await client.post("/v2/models/irisbench/predict/", json=IRIS)).json()
    assert body["predictions"]["label"] == expected["label"]
    infer = await client.post(
        "/v2/models/irisbench/infer",
        json={
            "inputs": [
                {"name": name, "datatype": "FP64", "shape": [2], "data": [value, value]} for name, value in IRIS.items()
            ]
        },
    )
    assert infer.status == 200, await infer.json()
    metadata = await (await client.get("/v2/models/irisbench/")).json()
    assert metadata["name"] == "irisbench"
    pids = client.server.app[MODELS]["irisbench"].runner.worker_pids()
    assert len(set(pids)) == 2 and os.getpid() not in pids  # two actors, neither in the server process


async def test_a_dead_actor_fails_its_call_with_503_and_is_replaced(serve, ray_head):
    client = await serve("echobench", executor="ray", ray_num_cpus=0.5)
    crashed = await client.post(ECHO + "&mode=crash")
    assert crashed.status == 503, await crashed.text()
    assert "died while running predict()" in (await crashed.json())["message"]
    for _ in range(100):
        response = await client.post(ECHO)
        if response.status == 200:
            break
    assert response.status == 200
    described = (await (await client.get("/v2/health/ready")).json())["models"]["echobench"]
    assert described["restarts"] == 1


async def test_a_model_that_cannot_fit_the_cluster_says_so(serve, ray_head):
    client = await serve("echobench", executor="ray", workers=3, ready=False)  # 3 × 1 CPU on 2
    for _ in range(200):
        body = await (await client.get("/v2/health/ready")).json()
        if body["models"]["echobench"]["state"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert "the Ray cluster has 2 CPU in all; model echobench asks for 3 CPU" in body["models"]["echobench"]["error"]


async def test_an_overrun_is_a_504_and_the_actor_is_replaced(serve, ray_head):
    client = await serve("echobench", executor="ray", ray_num_cpus=0.5, predict_timeout=0.5)
    late = await client.post(ECHO + "&mode=sleep&sleep_ms=5000")
    assert late.status == 504, await late.text()
    quick = await client.post(ECHO)
    assert quick.status in (200, 503)  # the replacement may still be warming
    await wait_ready(client)


async def test_a_training_is_a_ray_task_with_its_log_progress_and_cancel(serve, plugins, ray_head):
    plugins.install("chatty", fixture="chatty_trainer")
    client = await serve("chatty", executor="ray", ray_num_cpus=0.5)
    job = await (await client.post("/v2/models/chatty/train/", json={"steps": 3, "step_seconds": 0.2})).json()
    url = f"/v2/models/chatty/train/{job['uuid']}"
    done = await wait_for(client, url, finished, timeout=120)
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and done["result"]["output"] == {"steps": 3}
    log = await (await client.get(f"{url}/log")).text()
    for line in ("print: step 3/3", "logging: step 3", "stderr: step 3", "fd1: step 3"):
        assert line in log, log
    long = await (await client.post("/v2/models/chatty/train/", json={"steps": 400, "step_seconds": 0.25})).json()
    url = f"/v2/models/chatty/train/{long['uuid']}"
    midway = await wait_for(client, url, lambda b: (b.get("progress") or 0) > 0, timeout=120)
    assert midway["status"] == "running" and midway["progress_message"].startswith("step ")
    cancelled = await client.delete(url)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    steps = (await (await client.get(f"{url}/log")).text()).count("print: step")
    await asyncio.sleep(1.0)
    assert (await (await client.get(f"{url}/log")).text()).count("print: step") == steps  # it stopped


async def test_ray_actors_are_not_contained_so_code_formats_need_the_operators_word(serve, ray_head, iris_models):
    client = await serve("echobench", executor="ray", ray_num_cpus=0.5, registry_workers=1)
    refused = await client.put("/v2/models/iris", data=form(iris_models["joblib"]))
    body = await refused.json()
    assert refused.status == 403 and "--allow-unconfined-code" in body["message"] and "skops" in body["message"]
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]))).status == 201
    answer = await client.post("/v2/models/iris/predict/", json=ROW)
    assert answer.status == 200, await answer.text()


async def test_uploaded_models_are_multiplexed_across_ray_actors(serve, ray_head, iris_models):
    client = await serve(
        "echobench",
        executor="ray",
        ray_num_cpus=0.5,
        registry_workers=1,
        max_loaded_models=1,
        allow_unconfined_code=True,
    )
    for name, path in (("iris", iris_models["joblib"]), ("forest", iris_models["pickle"])):
        assert (await client.put(f"/v2/models/{name}", data=form(path))).status == 201
    expected = {"iris": iris_models["pipeline"], "forest": iris_models["forest"]}
    for _ in range(2):  # one actor keeps one model: each turn loads the other one again
        for name in ("iris", "forest"):
            body = ROW if name == "iris" else {"rows": [list(ROW.values())]}
            answer = await client.post(f"/v2/models/{name}/predict/", json=body)
            assert answer.status == 200, await answer.text()
            got = (await answer.json())["predictions"]
            label = got["label"] if name == "iris" else got[0]["label"]
            row = [list(ROW.values())] if name == "forest" else None
            want = (
                expected[name].predict(row)[0]
                if row is not None
                else expected[name].predict(__import__("pandas").DataFrame([ROW]))[0]
            )
            assert label == want
    pool = client.server.app[MODELS].uploads.serving.pool
    assert pool.kind == "shared" and pool.describe()["executor"] == "ray"
    assert pool.stats.loads >= 4 and pool.stats.evictions >= 3 and len(pool.loaded_keys()) == 1


def test_deepaas_run_with_ray_stops_on_sigterm_and_takes_its_local_head_with_it(tmp_path):
    """A real deepaas-run: the model's actors and the registry's hosts connect at once (one
    local head), SIGTERM still stops the server, and the head it started stops with it."""
    server = _ray_server(tmp_path)
    try:
        heads = _ray_heads_of(server.process.pid)
        assert len(heads) == 1, heads  # one cluster, however many runners connected at once
        session = _session_of(heads[0])
        assert os.path.isdir(session) and os.path.basename(session).startswith("session_")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while _alive(heads) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(heads), "the local Ray head outlived the server"
        assert not os.path.exists(session), "the local head's session directory was left behind"
    finally:
        server.kill()


def test_deepaas_run_with_ray_killed_with_sigkill_leaves_no_process_and_no_session(tmp_path):
    """kill -9 of the server: its local head's GCS and raylet die with it (Ray's fate-sharing)
    and the guard it left ends the raylet's agents and removes the session directory (the
    agents alone used to linger a minute, ~190 MB)."""
    server = _ray_server(tmp_path)
    try:
        tree = descendants(server.process.pid)
        agents = [p for p in tree if "agent" in _cmdline(p).lower()]
        assert agents, "the local head has no agents to watch: the test needs a Ray that starts them"
        heads = _ray_heads_of(server.process.pid)
        session = _session_of(heads[0])
        server.process.kill()
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while (alive(set(tree)) or os.path.exists(session)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: _cmdline(pid).replace("\0", " ").strip()[:80] for pid in alive(set(tree))}
        assert not left, f"outlived the server by 20 s: {left}"
        assert not os.path.exists(session), "the local head's session directory was left behind"
    finally:
        server.kill()


def _ray_server(tmp_path) -> Server:
    """A real deepaas-run serving echobench on a local Ray head, ready, that answered once."""
    server = Server(
        [
            "--model-name",
            "echobench",
            "--executor",
            "ray",
            "--ray-num-cpus",
            "0.25",
            "--data-dir",
            str(tmp_path / "data"),
        ]
    )
    try:
        server.wait_banner()
        server.wait_ready(timeout=180)
        status, body = server.request("POST", ECHO)
        assert status == 200, body
    except BaseException:
        server.kill()
        raise
    return server


def _session_of(head: int) -> str:
    """The session directory of the Ray head whose GCS is ``head``."""
    log_dir = next(arg.split("=", 1)[1] for arg in _cmdline(head).split("\0") if arg.startswith("--log_dir="))
    return os.path.dirname(log_dir.rstrip("/"))


def _ray_heads_of(pid: int) -> list[int]:
    """The GCS servers (one per Ray cluster) among ``pid``'s descendants."""
    return [p for p in descendants(pid) if "gcs_server" in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _alive(pids: list[int]) -> bool:
    return bool(alive(set(pids)))
