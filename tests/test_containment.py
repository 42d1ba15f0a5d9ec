"""An upload right is not a root shell: hostile model files against the contained workers.

Each test uploads a pickle whose loading (or whose predictions) tries what an attacker
would, through the real server, and reads back what it managed. Every attempt must be
refused by the kernel, and the server must keep serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import time
from pathlib import Path

import aiohttp
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from conftest import wait_ready
from deepaas_like import landlock
from deepaas_like.api import create_app
from deepaas_like.calls import CallFailure, Ok
from deepaas_like.replies import UnsafeReply, check_message, safe_loads

CONTAINED = landlock.abi() >= 4  # CI's Debian kernel has it; elsewhere code formats must be refused
ROW = {"x0": 5.1, "x1": 3.5, "x2": 1.4, "x3": 0.2}

# Run inside the worker when the pickle is loaded: every attack, and what came of it.
ATTACKS = r'''
import ctypes, json, os, signal, socket, time
results = {}

def attempt(name, action):
    try:
        results[name] = "MANAGED: " + repr(action())[:200]
    except BaseException as exc:
        results[name] = f"refused: {type(exc).__name__}: {exc}"[:240]

def fork_bomb():
    started = 0
    try:
        while started < 100000:
            child = os.fork()
            if child == 0:
                ctypes.CDLL(None).prctl(15, b"hostilebomb", 0, 0, 0)  # PR_SET_NAME
                time.sleep(120)
                os._exit(0)
            started += 1
    except OSError as exc:
        raise OSError(exc.errno, f"stopped after {started} processes: {exc.strerror}") from None
    return started

def connect():
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()

def bind():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.getsockname()

def udp():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", PORT))

def trace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(0x4206, SERVER, 0, 0) != 0:  # PTRACE_SEIZE: would not stop it
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    libc.ptrace(17, SERVER, 0, 0)  # PTRACE_DETACH
    return "attached"

attempt("read the token key", lambda: open(KEY, "rb").read())
attempt("read the JWT secret", lambda: open(JWT, "rb").read())
attempt("read the store", lambda: open(os.path.join(DATA, "state.sqlite3"), "rb").read(64))
attempt("list the data directory", lambda: os.listdir(DATA))
attempt("write into the data directory", lambda: open(os.path.join(DATA, "pwned"), "w").write("x"))
attempt("list the uploaded files", lambda: os.listdir(ARTIFACTS))
attempt("read the config file", lambda: open(CONFIG, "rb").read())
attempt("connect to the server", connect)
attempt("bind a TCP port", bind)
attempt("send UDP to the server", udp)
attempt("read the server's environ", lambda: open(f"/proc/{SERVER}/environ", "rb").read(64))
attempt("read the server's command line", lambda: open(f"/proc/{SERVER}/cmdline", "rb").read(64))
attempt("signal the server", lambda: os.kill(SERVER, 0))
attempt("trace the server", trace)
attempt("allocate 10 GiB", lambda: len(bytearray(10 * 2**30)))
attempt("fork without bound", fork_bomb)
raise RuntimeError("REPORT" + json.dumps(results) + "END")
'''

# A model whose predictions are objects that, unpickled, would run a command in the server.
POISONED_REPLIES = r'''
import numpy as np

class Poison(str):
    def __reduce__(self):
        return (__import__("os").system, ("touch " + MARKER,))

class Estimator:
    classes_ = ["a", "b"]   # a list: served as a tensor model, its answers passed as they are
    n_features_in_ = 4

    def predict(self, x):
        return np.array([Poison("p")] * len(x), dtype=object)

model = Estimator()
'''


class CodeOnLoad:
    """A pickle that runs ``code`` when loaded and answers the ``model`` it defines."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (f"(lambda g: (exec({self.code!r}, g), g.get('model'))[1])({{}})",))


def iris_forest(path: Path) -> Path:
    data = load_iris()
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(data.data, data.target), path)
    return path


async def upload(client, name: str, content: bytes, filename: str, **fields) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=filename, content_type="application/octet-stream")
    for key, value in fields.items():
        form.add_field(key, value)
    return await client.put(f"/v2/models/{name}", data=form)


@pytest.fixture
def contained_app(aiohttp_client, make_settings, tmp_path, monkeypatch):
    # The test's directory is on the workers' import path: what they must not reach (the data
    # directory, the secrets) lies inside a directory they may read.
    monkeypatch.syspath_prepend(str(tmp_path))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    jwt = secrets / "jwt.secret"
    jwt.write_text("s" * 40)
    config = secrets / "deepaas.conf"
    config.write_text("[DEFAULT]\nstore = postgresql://user:password@db/deepaas\n")

    async def start(**overrides):
        settings = make_settings(model_name=("echobench",), executor="thread", jwt_secret_file=str(jwt),
                                 config_file=str(config), sandbox_tasks=64, **overrides)
        client = await aiohttp_client(create_app(settings))
        await wait_ready(client)
        return client, settings

    return start


def hostile_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "hostilebomb":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def refused_here(client, tmp_path) -> bool:
    """On a kernel that cannot contain the workers, a pickle is refused (403) before anything
    loads it: that is what there is to test there."""
    if CONTAINED:
        return False
    response = await upload(client, "iris", iris_forest(tmp_path / "iris.joblib").read_bytes(), "iris.joblib")
    body = await response.json()
    assert response.status == 403, body
    assert "--allow-unconfined-code" in body["message"] and "skops" in body["message"]
    return True


async def test_a_hostile_pickle_is_refused_every_attempt_and_the_server_keeps_serving(contained_app, tmp_path):
    client, settings = await contained_app()
    if await refused_here(client, tmp_path):
        return
    good = await upload(client, "iris", iris_forest(tmp_path / "iris.joblib").read_bytes(), "iris.joblib")
    assert good.status == 201, await good.json()
    code = ATTACKS
    for name, value in {"KEY": str(settings.auth_key_path), "JWT": settings.jwt_secret_file,
                        "DATA": settings.data_dir, "ARTIFACTS": str(settings.artifacts_dir),
                        "CONFIG": settings.config_file, "PORT": client.server.port, "SERVER": os.getpid()}.items():
        code = f"{name} = {value!r}\n" + code
    response = await upload(client, "hostile", pickle.dumps(CodeOnLoad(code)), "hostile.pkl")
    body = await response.json()
    assert response.status == 422, body  # stored as a version that does not load
    error = body["version"]["error"]
    report = json.loads(error[error.index("REPORT") + 6:error.index("END")])
    managed = {attack: outcome for attack, outcome in report.items() if not outcome.startswith("refused")}
    assert not managed, f"the hostile pickle managed: {managed}"
    assert len(report) == 16
    assert "stopped after" in report["fork without bound"]
    started = int(report["fork without bound"].split("stopped after ")[1].split()[0])
    assert started <= settings.sandbox_tasks
    assert not (Path(settings.data_dir) / "pwned").exists()
    # The server keeps serving, and nothing the pickle started outlives its worker.
    predicted = await client.post("/v2/models/iris/predict/", json={"rows": [list(ROW.values())]})
    assert predicted.status == 200, await predicted.json()
    deadline = time.monotonic() + 10
    while hostile_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not hostile_processes()
    assert (await client.get("/v2/health/live")).status == 200


async def test_a_reply_that_would_run_code_in_the_server_is_not_read(contained_app, tmp_path):
    client, _ = await contained_app()
    if await refused_here(client, tmp_path):
        return
    marker = tmp_path / "ran-in-the-server"
    code = f"MARKER = {str(marker)!r}\n" + POISONED_REPLIES
    created = await upload(client, "poisoned", pickle.dumps(CodeOnLoad(code)), "poisoned.pkl")
    assert created.status == 201, await created.json()
    answer = await client.post("/v2/models/poisoned/predict/", json={"rows": [[1, 2, 3, 4]]})
    assert answer.status == 503, await answer.json()  # the worker that sent it is stopped
    assert "went away" in (await answer.json())["message"] or "died" in (await answer.json())["message"]
    assert not marker.exists()
    good = await upload(client, "iris", iris_forest(tmp_path / "iris.joblib").read_bytes(), "iris.joblib")
    assert good.status == 201
    assert (await client.post("/v2/models/iris/predict/", json={"rows": [list(ROW.values())]})).status == 200


async def test_the_containment_is_reported(contained_app, tmp_path, caplog):
    caplog.set_level("INFO", logger="deepaas_like.registry.pool")
    client, _ = await contained_app(registry_preload=True)
    deadline = time.monotonic() + 60
    while not any("workers of uploaded models" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    line = next(r.getMessage() for r in caplog.records if "workers of uploaded models" in r.getMessage())
    if not CONTAINED:
        assert "NOT contained" in line
        return
    assert "contained: " in line and "Landlock ABI" in line and "no TCP bind or connect" in line
    if os.geteuid() == 0:
        assert "user nobody" in line


# --- the server's reading of a contained worker's messages ---------------------------------


class _Runs:
    def __reduce__(self):
        return (os.system, ("true",))


def test_safe_loads_reads_plain_data_and_refuses_every_other_global():
    value = {"label": "setosa", "p": [0.1, 0.9], "raw": b"\x00", "n": np.float32(1.5), "a": np.arange(3.0),
             "c": 1 + 2j}
    message = safe_loads(pickle.dumps(("row", 1, 0, Ok(value)), protocol=pickle.HIGHEST_PROTOCOL))
    assert check_message(message)[3].value["a"].tolist() == [0.0, 1.0, 2.0]
    failure = safe_loads(pickle.dumps(("failed", CallFailure("ValueError", "bad", "tb", 422))))
    assert check_message(failure)[1].status == 422
    for hostile in (_Runs(), eval, os.system, Path("/etc"), {"x": _Runs()}, np.save):
        with pytest.raises(UnsafeReply):
            check_message(safe_loads(pickle.dumps(("row", 1, 0, Ok(hostile)))))


def test_check_message_refuses_lies_about_shape():
    lying = CallFailure("ValueError", "bad")
    object.__setattr__(lying, "error", "shadows the method")
    for message in (("row", "1", 0, Ok(1)), ("row", 1, 0, {"not": "an outcome"}), ("failed", lying),
                    ("failed", CallFailure("E", "m", status=200)), ("ready", 1), ("shell", "rm -rf /"),
                    ["row", 1, 0, Ok(1)], ("need_file", 3), ("event", "loaded", "x")):
        with pytest.raises(UnsafeReply):
            check_message(safe_loads(pickle.dumps(message)))
