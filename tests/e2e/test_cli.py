"""`deepaas-run` as a real subprocess: banner, HTTP, clean shutdown, startup errors."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from support.processes import DEEPAAS_RUN, Server, alive, descendants
from support.stores import version_1_store


@pytest.fixture
def server_factory(tmp_path):
    started: list[Server] = []

    def start(*args: str, env: dict | None = None) -> Server:
        server = Server(["--data-dir", str(tmp_path / "data"), *args], env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_and_shuts_down_cleanly(server_factory, signum):
    server = server_factory("--model-name", "echobench", "--model-name", "demo", "--workers", "2")
    base = server.wait_banner()
    assert "serving 2 model(s): echobench, demo" in server.output
    assert f"API documentation (Swagger UI): {base}/api" in server.output
    ready = server.wait_ready()
    assert ready["models"]["echobench"]["workers"] == 2
    status, body = server.request(
        "POST", "/v2/models/echobench/predict/?sepal_length=1&sepal_width=2&petal_length=3&petal_width=4"
    )
    assert status == 200 and body["predictions"]["petal_width"] == 4.0
    status, body = server.request(
        "POST", "/v2/models/demo/train/", b'{"epochs": 100, "epoch_seconds": 1}', {"Content-Type": "application/json"}
    )
    assert status == 200 and body["status"] == "running"
    time.sleep(1.0)
    children = descendants(server.process.pid)
    assert len(children) >= 5  # 2 + 2 workers, 1 training (plus multiprocessing helpers)
    started = time.monotonic()
    assert server.stop(signum) == 0
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not alive(children), "worker processes survived the server"


def test_import_error_stops_startup_with_the_real_error(server_factory, plugins):
    plugins.install("broken", fixture="broken_import")
    server = server_factory("--model-name", "broken", env={"PYTHONPATH": str(plugins.path)})
    assert server.process.wait(60) == 1
    stderr = server.process.stderr.read()
    assert "model plugin 'broken'" in stderr
    assert "No module named 'module_that_is_not_installed_anywhere'" in stderr
    assert "Traceback" in stderr


def test_bad_flags_and_values_exit_2():
    for args, text in ((["--workers", "zero"], "invalid value"), (["--no-such-flag"], "unrecognized arguments")):
        result = subprocess.run([DEEPAAS_RUN, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert text in result.stderr


def test_help_lists_every_option():
    result = subprocess.run([DEEPAAS_RUN, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in (
        "--listen-ip",
        "--listen-port",
        "--model-name",
        "--workers",
        "--warm",
        "--no-warm",
        "--base-path",
        "--client-max-size",
        "--no-predict-endpoint",
        "--no-train-endpoint",
        "--no-doc-endpoint",
        "--log-level",
        "--config-file",
        "--executor",
        "--data-dir",
    ):
        assert flag in result.stdout, flag


def test_port_in_use_is_a_clear_error(server_factory):
    first = server_factory("--model-name", "echobench", "--executor", "thread")
    port = first.wait_banner().rsplit(":", 1)[1]
    second = subprocess.run(
        [DEEPAAS_RUN, "--listen-port", port, "--model-name", "echobench", "--executor", "thread"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2  # a setting to correct
    assert f"--listen-port {port}: cannot listen there" in second.stderr
    assert first.stop() == 0


def test_configuration_mistakes_are_one_line_naming_the_option_and_exit_2(tmp_path):
    short = tmp_path / "jwt.secret"
    short.write_bytes(b"x" * 20)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = (
            (["--auth", "--jwt-secret-file", str(short)], f"--jwt-secret-file {short}: the secret is 20 bytes"),
            (["--listen-port", str(port)], f"--listen-port {port}: cannot listen there"),
            (["--store", "mysql://db.example/x"], "--store"),
            (["--model-name", "nosuchmodel"], "nosuchmodel"),
        )
        for number, (args, named) in enumerate(cases):
            result = subprocess.run(
                [
                    DEEPAAS_RUN,
                    "--data-dir",
                    str(tmp_path / f"data{number}"),
                    "--model-name",
                    "echobench",
                    "--executor",
                    "thread",
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 2, (args, result.stderr)
            assert "Traceback" not in result.stderr, result.stderr
            errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
            assert len(errors) == 1 and errors[0].startswith("deepaas-run: error: ") and named in errors[0], (
                args,
                result.stderr,
            )


def test_the_store_migration_is_quiet_at_the_default_log_level(tmp_path):
    data = tmp_path / "data"  # a data directory of a server from before the registry: migrated by Alembic
    data.mkdir()
    old = version_1_store(data)
    old.commit()
    old.close()
    server = Server(["--data-dir", str(data), "--model-name", "echobench", "--executor", "thread"])
    try:
        server.wait_banner()
        server.wait_ready()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        stderr = server.process.stderr.read()
    finally:
        server.kill()
    assert "migrating the schema from 0001_jobs" in stderr  # ours: one line
    assert "alembic" not in stderr.lower(), stderr  # not Alembic's INFO lines


def test_stops_promptly_with_a_stuck_thread_mode_prediction(server_factory, plugins):
    plugins.install("slow")
    server = server_factory(
        "--model-name", "slow", "--executor", "thread", "--shutdown-timeout", "1", env={"PYTHONPATH": str(plugins.path)}
    )
    server.wait_banner()
    server.wait_ready()
    outcome: list = []

    def stuck_request() -> None:
        try:
            outcome.append(
                server.request(
                    "POST",
                    "/v2/models/slow/predict/",
                    b'{"seconds": 120}',
                    {"Content-Type": "application/json"},
                    timeout=30,
                )
            )
        except OSError as exc:  # cut off after the shutdown grace period
            outcome.append(exc)

    client = threading.Thread(target=stuck_request, daemon=True)
    client.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    client.join(10)
    assert outcome and isinstance(outcome[0], OSError)  # the stuck request did not hold the server


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(port: int, path: str) -> tuple[int, dict]:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _health_server(tmp_path, port: int) -> Server:
    return Server(
        [
            "--model-name",
            "echobench",
            "--data-dir",
            str(tmp_path / "data"),
            "--health-port",
            str(port),
            "--no-registry-preload",
        ]
    )


def _health_process(server: Server) -> int:
    """The PID of the server's health process (its one child running health_port.py)."""
    for pid in descendants(server.process.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"health_port.py" in fh.read():
                return pid
    raise AssertionError("no health process")


def test_health_on_a_port_of_its_own(tmp_path):
    port = _free_port()
    server = _health_server(tmp_path, port)
    try:
        server.wait_banner()
        assert f"http://127.0.0.1:{port}/v2/health/ready" in server.output
        server.wait_ready()
        deadline = time.monotonic() + 10
        while (answer := _health(port, "/v2/health/ready"))[0] != 200:  # the snapshot is at most 0.5 s old
            assert answer[0] == 503 and time.monotonic() < deadline, answer
            time.sleep(0.2)
        body = answer[1]
        assert body["status"] == "ready" and body["models"]["echobench"]["ready"] is True
        assert _health(port, "/v2/health/live") == (200, {"status": "alive"})
        status, body = _health(port, "/v2/models/")
        assert status == 404 and "serves /v2/health/live" in body["message"]
        health = _health_process(server)
    finally:
        assert server.stop() == 0
    assert not alive({health})  # it stopped with the server


def test_health_port_tells_a_stalled_server_and_outlives_no_server(tmp_path):
    port = _free_port()
    server = _health_server(tmp_path, port)
    try:
        server.wait_banner()
        server.wait_ready()
        health = _health_process(server)
        os.kill(server.process.pid, signal.SIGSTOP)  # the whole server stalls, its event loop too
        try:
            stalled_at = time.monotonic()
            assert _health(port, "/v2/health/live")[0] == 200  # its own process still answers at once
            while (answer := _health(port, "/v2/health/live"))[0] == 200:
                assert time.monotonic() - stalled_at < 15, answer
                time.sleep(0.25)
            assert answer[0] == 503 and answer[1]["status"] == "stalled", answer
            assert time.monotonic() - stalled_at >= 4.5  # after 5 s without a heartbeat, not before
            assert "has not answered for" in answer[1]["message"]
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while _health(port, "/v2/health/live")[0] != 200:  # the heartbeat is back
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(health, signal.SIGKILL)  # the health process dies: the server starts another one
        deadline = time.monotonic() + 20
        while True:
            try:
                if _health(port, "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, server.output
            time.sleep(0.2)
        replacement = _health_process(server)
        assert replacement != health
        # its port taken meanwhile: the server says so and tries again, later and later
        import socket

        os.kill(server.process.pid, signal.SIGSTOP)  # so that the server cannot take the port back first
        os.kill(replacement, signal.SIGKILL)
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 5
            while True:
                try:
                    squatter.bind(("127.0.0.1", port))
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
            squatter.listen()
            os.kill(server.process.pid, signal.SIGCONT)
            time.sleep(3)  # tries at about 0.5, 1.5 and 3.5 s
        deadline = time.monotonic() + 20
        while True:  # the port is free again: the next try takes it
            try:
                if _health(port, "/v2/health/live")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        replacement = _health_process(server)
        server.process.kill()  # the server dies without a word: its health process ends too
        server.process.wait(10)
        log = server.process.stderr.read()
        delays = [
            float(d) for d in re.findall(r"could not start again: Address already in use; next try in ([\d.]+) s", log)
        ]
        assert len(delays) >= 2 and delays == sorted(set(delays)), log  # later and later
        deadline = time.monotonic() + 10
        while alive({replacement}):
            assert time.monotonic() < deadline, "the health process outlived its server"
            time.sleep(0.1)
    finally:
        server.kill()


def test_health_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                DEEPAAS_RUN,
                "--listen-port",
                "0",
                "--model-name",
                "echobench",
                "--data-dir",
                str(tmp_path / "data"),
                "--health-port",
                str(port),
                "--no-registry-preload",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2  # a setting to correct
    assert f"--health-port {port}: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
