"""An upload right is not a root shell: hostile model files against the contained workers.

Each test uploads a pickle whose loading (or whose predictions) tries what an attacker
would, through the real server, and reads back what it managed. Every attempt must be
refused by the kernel, and the server must keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from deepaas_like.api import create_app
from deepaas_like.api.keys import MODELS
from deepaas_like.containment import landlock
from deepaas_like.engine.calls import CallFailure, Ok
from deepaas_like.engine.replies import UnsafeReply, decode, encode
from support.helpers import wait_ready

CONTAINED = landlock.abi() >= 4  # CI's Debian kernel has it; elsewhere code formats must be refused
ROW = {"x0": 5.1, "x1": 3.5, "x2": 1.4, "x3": 0.2}

# Run inside the worker when the pickle is loaded: every attack, and what came of it.
ATTACKS = r"""
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
def environment():
    found = [where for where, text in (("environ", repr(dict(os.environ))), ("argv", repr(__import__("sys").argv)),
                                       ("/proc/self/environ", open("/proc/self/environ", "rb").read().decode()))
             if "canary-of-the-servers-environment" in text]
    if not found:
        raise LookupError("not in its environ, argv or /proc/self/environ")
    return found

def unix_socket():
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(SOCKET)
    return sock.recv(100)

def user_namespace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "a new user namespace"

attempt("allocate 10 GiB", lambda: len(bytearray(10 * 2**30)))
attempt("find the server's environment", environment)
attempt("connect to a UNIX socket by its path", unix_socket)
attempt("make a user namespace", user_namespace)
attempt("fork without bound", fork_bomb)
raise RuntimeError("REPORT" + json.dumps(results) + "END")
"""

# A model whose predict writes, on its pipe to the server, a pickle that would run a command
# in the server if the server unpickled it; and answers as if nothing happened.
POISONED_REPLIES = r"""
import os, pickle, struct, sys
import numpy as np

class Runs:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))

class Estimator:
    n_features_in_ = 4

    def predict(self, x):
        payload = pickle.dumps(("row", 1, 0, Runs()))
        os.write(int(sys.argv[2]), struct.pack("!i", len(payload)) + payload)  # its pipe to the server
        return np.zeros(len(x))

model = Estimator()
"""


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
    monkeypatch.setenv("DEEPAAS_CANARY", "canary-of-the-servers-environment")  # the workers must not see it
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    jwt = secrets / "jwt.secret"
    jwt.write_text("s" * 40)
    config = secrets / "deepaas.conf"
    config.write_text("[DEFAULT]\nstore = postgresql://user:password@db/deepaas\n")

    async def start(**overrides):
        settings = make_settings(
            model_name=("echobench",),
            executor="thread",
            jwt_secret_file=str(jwt),
            config_file=str(config),
            sandbox_tasks=64,
            **overrides,
        )
        client = await aiohttp_client(create_app(settings))
        await wait_ready(client)
        return client, settings

    return start


@contextlib.contextmanager
def open_unix_socket():
    """A UNIX socket anyone may connect to by its path (as a database's or a daemon's is), answering once."""
    folder = Path(tempfile.mkdtemp(prefix="deepaas-like-test-socket-"))
    folder.chmod(0o755)
    path = str(folder / "daemon.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen()
    server.settimeout(0.2)
    done = threading.Event()

    def answer() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"reached the daemon")
            conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join(2)
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


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
    with open_unix_socket() as socket_path:
        for name, value in {
            "KEY": str(settings.auth_key_path),
            "JWT": settings.jwt_secret_file,
            "DATA": settings.data_dir,
            "ARTIFACTS": str(settings.artifacts_dir),
            "CONFIG": settings.config_file,
            "PORT": client.server.port,
            "SERVER": os.getpid(),
            "SOCKET": socket_path,
        }.items():
            code = f"{name} = {value!r}\n" + code
        response = await upload(client, "hostile", pickle.dumps(CodeOnLoad(code)), "hostile.pkl")
    body = await response.json()
    assert response.status == 422, body  # stored as a version that does not load
    error = body["version"]["error"]
    report = json.loads(error[error.index("REPORT") + 6 : error.index("END")])
    managed = {attack: outcome for attack, outcome in report.items() if not outcome.startswith("refused")}
    assert not managed, f"the hostile pickle managed: {managed}"
    assert len(report) == 19
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
    assert "died" in (await answer.json())["message"]
    await asyncio.sleep(0.5)
    assert not marker.exists()
    good = await upload(client, "iris", iris_forest(tmp_path / "iris.joblib").read_bytes(), "iris.joblib")
    assert good.status == 201
    assert (await client.post("/v2/models/iris/predict/", json={"rows": [list(ROW.values())]})).status == 200


STUCK = r"""
import ctypes, time

class Estimator:
    n_features_in_ = 4

    def predict(self, x):
        ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # no more PR_SET_PDEATHSIG: it would outlive its parent
        time.sleep(600)

model = Estimator()
"""


@pytest.mark.slow
async def test_a_worker_that_hangs_and_unties_itself_is_still_ended(contained_app, tmp_path):
    client, _ = await contained_app(predict_timeout=2.0)
    if await refused_here(client, tmp_path):
        return
    assert (await upload(client, "stuck", pickle.dumps(CodeOnLoad(STUCK)), "stuck.pkl")).status == 201
    pool = client.server.app[MODELS].uploads.serving.pool
    serving = {w.serving_pid for w in pool._current}
    answer = await client.post("/v2/models/stuck/predict/", json={"rows": [[1, 2, 3, 4]]})
    assert answer.status == 504, await answer.text()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in serving) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not [pid for pid in serving if Path(f"/proc/{pid}").exists()]
    good = await upload(client, "iris", iris_forest(tmp_path / "iris.joblib").read_bytes(), "iris.joblib")
    assert good.status == 201  # a fresh worker serves
    assert (await client.post("/v2/models/iris/predict/", json={"rows": [list(ROW.values())]})).status == 200


async def test_the_containment_is_reported(contained_app, tmp_path, caplog):
    caplog.set_level("INFO", logger="deepaas_like.engine.shared")
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


def test_a_contained_workers_messages_are_json_and_checked():
    value = {"label": "setosa", "p": [0.1, 0.9], "n": np.float32(1.5), "a": np.arange(3.0), 7: "key"}
    kind, call, index, outcome = decode(encode(("row", 1, 0, Ok(value))))
    assert (kind, call, index) == ("row", 1, 0) and outcome == Ok(
        {"label": "setosa", "p": [0.1, 0.9], "n": 1.5, "a": [0.0, 1.0, 2.0], "7": "key"}
    )
    failure = decode(encode(("failed", CallFailure("ValueError", "bad", "tb", 422))))[1]
    assert failure == CallFailure("ValueError", "bad", "tb", 422)
    with pytest.raises(TypeError):
        encode(("row", 1, 0, Ok(Path("/etc"))))  # not JSON: the worker answers UnsendableResult instead
    hostile = [
        pickle.dumps(("row", 1, 0, Ok(1))),  # a pickle is not read at all
        b'["row", "1", 0, {"ok": 1}]',
        b'["row", 1, 0, {"not": "an outcome"}]',
        b'["row", 1, 0, {"ok": 1, "x": 2}]',
        b'["failed", {"failure": {"exc_type": "E", "message": "m", "status": 200}}]',
        b'["failed", {"failure": {"exc_type": "E", "message": "m", "error": "shadows the method"}}]',
        b'["failed", {"failure": {"exc_type": 1, "message": "m"}}]',
        b'["ready", 1]',
        b'["shell", "rm -rf /"]',
        b'{"row": 1}',
        b'["need_file", 3]',
        b'["event", "loaded", "x"]',
        b'["progress", "half", null]',
        b"[]",
    ]
    for data in hostile:
        with pytest.raises(UnsafeReply):
            decode(data)


def test_a_denied_path_inside_a_readable_directory_stays_unreadable(tmp_path):
    """Landlock allows by directory: what must stay hidden inside an allowed one is left out
    by allowing its siblings on the way down (landlock_rules._allow_except), checked in a real process."""
    readable = tmp_path / "site"
    (readable / "pkg").mkdir(parents=True)
    (readable / "pkg" / "code.py").write_text("ok")
    (readable / "data" / "deep").mkdir(parents=True)
    (readable / "data" / "deep" / "state.sqlite3").write_text("secret")
    (readable / "data" / "other.txt").write_text("fine")
    script = f"""
import os
from deepaas_like.containment import landlock
from deepaas_like.containment.landlock_rules import _allow_except
ruleset = landlock.Ruleset(landlock.abi())
_allow_except(ruleset, {str(readable)!r}, landlock.READ, [{str(readable / "data" / "deep")!r}])
ruleset.allow("/", landlock.READ_DIR)  # to list what is refused
for lib in ("/usr", "/lib", "/lib64", "/etc", "/proc"):
    ruleset.allow(lib, landlock.READ)
ruleset.restrict_self()
for path in ("pkg/code.py", "data/other.txt", "data/deep/state.sqlite3"):
    try:
        print(path, open(os.path.join({str(readable)!r}, path)).read())
    except PermissionError:
        print(path, "refused")
"""
    if not CONTAINED:
        return  # no Landlock on this kernel: the code formats are refused instead (tests above)
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:3] == [
        "pkg/code.py ok",
        "data/other.txt fine",
        "data/deep/state.sqlite3 refused",
    ], result.stderr


def test_skops_files_are_trusted_with_classes_of_scikit_learn_not_its_functions():
    from deepaas_like_frameworks.sklearn import _trustworthy

    assert _trustworthy("sklearn.linear_model._logistic.LogisticRegression")
    assert _trustworthy("numpy.log")  # a ufunc
    assert not _trustworthy("sklearn.utils._testing.assert_run_python_script_without_output")
    assert not _trustworthy("sklearn.utils.deprecation.deprecated.__call__")
    assert not _trustworthy("os.system") and not _trustworthy("builtins.eval")


def test_scratch_directories_of_a_killed_server_are_removed_by_the_next_and_no_others(tmp_path):
    """A contained worker's TMPDIR is named after its server's pid: a server killed with -9
    cannot remove its own, so the next server removes the empty ones whose server is gone,
    and never a running server's (nor one that holds files)."""
    import subprocess
    import sys

    from deepaas_like.engine.interpreter import SCRATCH_PREFIX, sweep_scratch

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_empty = tmp_path / f"{SCRATCH_PREFIX}{gone.pid}-abc"
    dead_full = tmp_path / f"{SCRATCH_PREFIX}{gone.pid}-def"
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-ghi"
    other = tmp_path / "someone-elses-dir"
    for folder in (dead_empty, dead_full, live, other):
        folder.mkdir()
    (dead_full / "kept").write_text("x")
    assert sweep_scratch(str(tmp_path)) == [dead_empty.name]
    assert not dead_empty.exists() and dead_full.exists() and live.exists() and other.exists()
