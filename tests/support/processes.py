"""Helpers for tests that run `deepaas-run` as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

DEEPAAS_RUN = str(Path(sys.executable).parent / "deepaas-run")


def alive(pids: set[int]) -> set[int]:
    """The processes of ``pids`` that still run (zombies count as ended)."""
    return pids & descendants(0)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc; 0 means every process)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    state, parent = fh.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if state != "Z":  # a zombie has exited already
                parents[int(entry)] = int(parent)
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


class Server:
    """`deepaas-run` in a subprocess, on a free port, stopped by PID at the end."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(command or [DEEPAAS_RUN]), "--listen-port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.base = ""
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def wait_banner(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"(http://[^ ]+)/swagger\.json", "".join(self._lines))
            if match:
                self.base = match.group(1)
                return self.base
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no banner; output so far:\n{self.output}\n{self.stderr_now()}")

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self._lines.append(line)

    def stderr_now(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict | bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, data, ctype = response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            status, data, ctype = exc.code, exc.read(), exc.headers.get_content_type()
        return status, json.loads(data) if ctype == "application/json" else data

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.request("GET", "/v2/health/ready")
            if status == 200:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.1)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        for pid in descendants(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
