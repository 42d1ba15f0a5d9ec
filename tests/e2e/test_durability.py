"""Jobs survive restarts of a real `deepaas-run`: SIGKILL mid-job, then a clean stop."""

import json
import os
import signal
import time

import pytest

from support.processes import Server, alive, descendants

pytestmark = pytest.mark.stores("sqlite", "postgresql")  # the same suite on each store

IRIS_JSON = json.dumps({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def start(tmp_path, plugins, store):  # store: DEEPAAS_STORE for the servers
    plugins.install("slow")
    servers: list[Server] = []
    env = {"PYTHONPATH": str(plugins.path)}

    def start_server() -> Server:
        server = Server(
            [
                "--model-name",
                "slow",
                "--model-name",
                "echobench",
                "--data-dir",
                str(tmp_path / "data"),
                "--executor",
                "echobench=thread",
            ],
            env=env,
        )
        servers.append(server)
        server.wait_banner()
        server.wait_ready()
        return server

    yield start_server
    for server in servers:
        server.kill()


def wait_status(server, path, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        status, body = server.request("GET", path)
        if status == 200 and body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def post(server, path, payload):
    return server.request("POST", path, json.dumps(payload).encode(), JSON)


def test_jobs_survive_a_kill_and_a_clean_restart(start, tmp_path):
    first = start()
    _, trained = post(first, "/v2/models/slow/train/", {"seconds": 0.1})
    _, predicted = first.request("POST", "/v2/models/echobench/predictions/", IRIS_JSON, JSON)
    done_training = wait_status(first, f"/v2/models/slow/train/{trained['uuid']}", {"done"})
    done_prediction = wait_status(first, f"/v2/models/echobench/predictions/{predicted['id']}", {"done"})
    _, running = post(first, "/v2/models/slow/train/", {"seconds": 120})
    _, queued = post(first, "/v2/models/slow/train/", {"seconds": 1})
    _, pending = post(first, "/v2/models/slow/predictions/", {"seconds": 120})
    assert (running["status"], queued["status"]) == ("running", "queued")
    wait_status(first, f"/v2/models/slow/predictions/{pending['id']}", {"running"})

    busy = Server(["--model-name", "echobench", "--data-dir", str(tmp_path / "data")])
    assert busy.process.wait(60) == 2  # a setting to correct: another --data-dir
    assert "is in use by another deepaas-run" in busy.process.stderr.read()
    busy.kill()

    children = descendants(first.process.pid)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    deadline = time.monotonic() + 10
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(children), "workers outlived a killed server"

    second = start()
    crashed = "the server stopped unexpectedly (crash or kill) while the job was"
    _, trainings = second.request("GET", "/v2/models/slow/train/")
    by_id = {job["uuid"]: job for job in trainings}
    assert by_id[trained["uuid"]]["status"] == "done"
    assert by_id[trained["uuid"]]["result"] == done_training["result"]
    assert by_id[running["uuid"]]["status"] == "interrupted"
    assert by_id[running["uuid"]]["message"] == f"{crashed} running"
    assert by_id[queued["uuid"]]["message"] == f"{crashed} queued"
    _, predictions = second.request("GET", "/v2/models/slow/predictions/")
    assert [(j["id"], j["status"]) for j in predictions] == [(pending["id"], "interrupted")]
    _, kept = second.request("GET", f"/v2/models/echobench/predictions/{predicted['id']}")
    assert kept["status"] == "done" and kept["result"] == done_prediction["result"]

    _, another = post(second, "/v2/models/slow/train/", {"seconds": 120})
    assert second.stop(signal.SIGTERM) == 0
    third = start()
    _, after = third.request("GET", f"/v2/models/slow/train/{another['uuid']}")
    assert after["status"] == "interrupted"
    assert after["message"] == "the server was stopped while it was running"
    _, still = third.request("GET", f"/v2/models/slow/train/{trained['uuid']}")
    assert still["status"] == "done" and still["result"] == done_training["result"]
    assert third.stop() == 0
