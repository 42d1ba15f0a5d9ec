"""Servers under test: started on a free loopback port, waited for, stopped by PID.

    server = Server(ours_command(data_dir, "echobench", ["--executor", "thread"]),
                    "/v2/health/ready", log_path)
    try:
        ...  # server.url("/v2/models/echobench/"), server.pid, server.log_size()
    finally:
        server.stop()

Each server runs in a session of its own, so that ``stop()`` also takes whatever it
started (DEEPaaS's pool processes, our worker processes) with it. With ``settle=True``
the server is handed over only once its process tree is idle: ours answers ready while
its registry's shared worker still imports scikit-learn and onnxruntime in the background
(``--registry-preload``, about 2 s of a core), which would otherwise weigh on whichever
case is measured first.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

from loadgen import process_tree_cpu

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGINS = ROOT / "tests" / "bench_plugins"  # copies of ../shared/bench/plugins (a test keeps them equal)
SLOWBENCH = HERE / "plugins" / "slowbench"
START_TIMEOUT_S = 180
SETTLE_TIMEOUT_S = 20.0
SETTLE_WINDOW_S = 0.5
SETTLE_CPU_SHARE = 0.05  # of one core, over a window: idle


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by the servers and wrk) towards
    ``wanted``, within the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def deepaas_listen(port: int) -> list[str]:
    return ["--listen-ip", "127.0.0.1", "--listen-port", str(port)]


def bare_listen(port: int) -> list[str]:
    return ["--port", str(port)]


def ours_command(data_dir: Path, models: list[str], flags: list[str], log_level: str | None = "WARNING") -> list[str]:
    """``deepaas-run`` serving ``models`` with ``flags`` (``log_level=None``: the default level)."""
    command = [sys.executable, "-m", "deepaas_like.cli.run", "--data-dir", str(data_dir)]
    if log_level:
        command += ["--log-level", log_level]
    for model in models:
        command += ["--model-name", model]
    return [*command, *flags]


def bare_command() -> list[str]:
    return [sys.executable, str(HERE / "bare_aiohttp.py"), "--max-seconds", "900"]


class Server:
    """One server process on a free loopback port, stopped by PID."""

    def __init__(
        self,
        command: list[str],
        ready_path: str,
        log_path: Path,
        listen: Callable[[int], list[str]] = deepaas_listen,
        settle: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [*command, *listen(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # and whatever it started in its session (a local Ray head)
                raise RuntimeError(f"server exited ({self.process.returncode}); see {log_path}")
            try:
                with urllib.request.urlopen(self.url(ready_path), timeout=2) as response:
                    if response.status == 200:
                        self.settle_s = self._settle() if settle else 0.0
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {start_timeout_s:g} s; see {log_path}")

    def _settle(self) -> float:
        """Wait (at most SETTLE_TIMEOUT_S) until the process tree uses less than SETTLE_CPU_SHARE
        of a core over SETTLE_WINDOW_S; the seconds it took."""
        started = time.monotonic()
        before = process_tree_cpu(self.pid)
        while time.monotonic() - started < SETTLE_TIMEOUT_S:
            time.sleep(SETTLE_WINDOW_S)
            after = process_tree_cpu(self.pid)
            if after - before < SETTLE_WINDOW_S * SETTLE_CPU_SHARE:
                break
            before = after
        waited = time.monotonic() - started
        if waited > SETTLE_WINDOW_S * 2:
            log(f"  the server (PID {self.pid}) was busy for {waited:.1f} s after answering ready")
        return waited

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_size(self) -> tuple[int, int]:
        """(lines, bytes) the server has written to its log so far."""
        data = self.log_path.read_bytes()
        return data.count(b"\n"), len(data)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM; after ``grace_s`` a second SIGTERM (ours then stops at once); then SIGKILL to the group."""
        for wait_s in (grace_s, 2.0):
            if self.process.poll() is not None:
                break
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(wait_s)  # DEEPaaS 2.6 may hang on SIGTERM; its group is killed below
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        try:  # anything left in its session (DEEPaaS's pool processes)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def ensure_deepaas(venv: Path) -> Path:
    """DEEPaaS 2.6.0 with scikit-learn and the bench plugins in a virtualenv of its own."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import deepaas, sklearn, irisbench.api, echobench.api, slowbench.api"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return venv / "bin" / "deepaas-run"
    log(f"installing DEEPaaS 2.6.0 into {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "deepaas==2.6.0", "scikit-learn", "joblib"], check=True)
    subprocess.run([*pip, str(PLUGINS / "echobench"), str(PLUGINS / "irisbench"), str(SLOWBENCH)], check=True)
    return venv / "bin" / "deepaas-run"
