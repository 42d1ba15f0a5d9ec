"""Worker processes after each model's first are forked from a helper that has imported
the models' libraries (deepaas_like.engine.forking): trainings and the workers re-warmed after
them skip the libraries' import, and still import their plugin afresh."""

import concurrent.futures
import os
import time

import pytest

from support.processes import Server, alive, descendants


def _start(plugins, tmp_path, *args):
    plugins.install("weights", fixture="import_time_weights")
    path = os.pathsep.join(p for p in (str(plugins.path), os.environ.get("PYTHONPATH", "")) if p)
    server = Server(
        ["--data-dir", str(tmp_path / "data"), "--model-name", "weights", "--workers", "2", *args],
        env={"PYTHONPATH": path},
    )
    server.wait_banner()
    server.wait_ready()
    return server


def _train(server):
    status, job = server.request("POST", "/v2/models/weights/train/", b"{}", {"Content-Type": "application/json"})
    assert status == 200, job
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        status, job = server.request("GET", f"/v2/models/weights/train/{job['uuid']}")
    assert job["status"] == "done", job
    return job["result"]["output"]


def _predictions(server, n=24):
    """``n`` predictions, 8 at a time (so that both workers answer)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: server.request("POST", "/v2/models/weights/predict/"), range(n)))
    assert {status for status, _ in replies} == {200}, replies
    return [body["predictions"] for _, body in replies]


@pytest.mark.slow
def test_trainings_and_the_workers_after_them_are_forked_with_the_libraries_and_import_the_plugin_afresh(
    plugins, tmp_path
):
    server = _start(plugins, tmp_path)
    try:
        first = _predictions(server)
        assert {p["version"] for p in first} == {0}
        assert {p["numpy_before"] for p in first} == {False}  # the first workers are spawned
        assert {p["server_modules"] for p in first} == {False}  # without the server's main module
        # The first process asked for after start (a training) starts the helper, which
        # preloads what the first workers imported, in the background: within a minute a
        # training runs in a process forked from it.
        deadline = time.monotonic() + 60
        while not (result := _train(server))["numpy_before"]:
            assert time.monotonic() < deadline, "no training was forked from the preloaded helper"
        version = result["version"]
        after = _predictions(server)
        assert {p["version"] for p in after} == {version}  # the plugin read its new weights at import
        assert {p["numpy_before"] for p in after} == {True}  # and numpy was there before it
        assert {p["server_modules"] for p in after} == {False}  # forked, still without the server's main module
        assert len({p["pid"] for p in after}) == 2
        assert server.process.pid not in {p["parent"] for p in after}  # forked from the helper
        share = max(1, len(os.sched_getaffinity(0)) // 2)
        assert {tuple(p["blas_threads"]) for p in after} == {(share,)}  # a worker's share of the CPUs
        assert _train(server)["version"] == version + 1
        assert {p["version"] for p in _predictions(server)} == {version + 1}
        children = descendants(server.process.pid)
        assert server.stop() == 0
        time.sleep(0.2)
        assert not alive(children), "processes survived the server"
    finally:
        server.kill()


@pytest.mark.slow
def test_with_spawn_every_process_is_a_fresh_interpreter(plugins, tmp_path):
    server = _start(plugins, tmp_path, "--start-method", "spawn")
    try:
        for expected in (1, 2):
            result = _train(server)
            assert result == {"version": expected, "numpy_before": False}
            answers = _predictions(server, 4)
            assert {(p["version"], p["numpy_before"]) for p in answers} == {(expected, False)}
        assert server.stop() == 0
    finally:
        server.kill()
