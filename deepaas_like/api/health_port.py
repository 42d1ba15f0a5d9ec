"""Health on a port of its own (``--health-port``), answered by a small process of its own.

The main port's ``/v2/health/*`` share the event loop with every other request: under a
flood of thousands of clients they wait their turn like everything else. Probes of an
orchestrator (Kubernetes' liveness and readiness) should not. A thread of the server would
not do either: it waits for the interpreter's lock behind the busy event loop (up to 5 ms
each time it needs it, so a probe took 100 ms at the 99th percentile under a flood). So
this listener is a separate Python process that imports nothing but the standard library
(this file, run as a script). It never touches the models: the main loop sends it a
readiness snapshot, which is also its heartbeat, twice a second over its stdin, and
liveness fails (503) when that heartbeat stops, i.e. when the main loop is stuck::

    GET :HEALTH_PORT/v2/health/live    200 {"status": "alive"}  | 503 when the main loop stalls
    GET :HEALTH_PORT/v2/health/ready   200 / 503, as on the main port (at most 0.5 s old)

The process ends when its stdin closes: when the server stops, or dies however it dies.
If it dies itself, the server starts another one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

LOG = logging.getLogger(__name__)
SNAPSHOT_INTERVAL = 0.5
STALL_AFTER = 5.0  # seconds without a heartbeat: the main loop is stuck
START_TIMEOUT = 30.0
READ_TIMEOUT = 5.0
MAX_HEADER = 8192
MAX_UNSENT = 64 * 1024  # snapshots the process has not read yet (it is stuck): stop sending
NOT_READY = b'{"status":"not ready","models":{}}'  # until the first snapshot


class HealthPortFailed(Exception):
    """The health process could not listen (the port is taken, for example)."""


class HealthListener:
    """The server's side: starts the health process and feeds it snapshots."""

    def __init__(self, host: str, port: int, readiness: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self.host = host
        self.port = port
        self._readiness = readiness
        self._snapshot = b"503 %s\n" % NOT_READY
        self._process: asyncio.subprocess.Process | None = None
        self._relaunch: asyncio.Task | None = None
        self._failures = 0  # restarts in a row that failed; the next waits longer
        self._retry_at = 0.0
        self._ticker: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start the process, listening; :class:`HealthPortFailed` if it cannot."""
        self._process = await self._launch()
        self._publish()

    async def _launch(self) -> asyncio.subprocess.Process:
        # -I: isolated (no environment, no user site, not this file's directory on the path)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            __file__,
            self.host,
            str(self.port),
            str(STALL_AFTER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            first = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except asyncio.TimeoutError:
            first = b"error it did not start within %d s" % START_TIMEOUT
        word, _, rest = first.decode(errors="replace").strip().partition(" ")
        if word != "listening":
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise HealthPortFailed(rest or f"the health process ended (exit code {process.returncode})")
        self.port = int(rest)
        return process

    def _publish(self) -> None:
        try:
            status, body = self._readiness()
            self._snapshot = b"%d %s\n" % (status, json.dumps(body, separators=(",", ":")).encode())
        except Exception:  # the last snapshot goes again; the next tick tries again
            LOG.exception("readiness snapshot for the health port failed")
        loop = asyncio.get_running_loop()
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            if process.stdin.transport.get_write_buffer_size() < MAX_UNSENT:
                process.stdin.write(self._snapshot)
        elif (self._relaunch is None or self._relaunch.done()) and loop.time() >= self._retry_at:
            self._relaunch = loop.create_task(self._replace())
        self._ticker = loop.call_later(SNAPSHOT_INTERVAL, self._publish)

    async def _replace(self) -> None:
        if self._process is not None:  # the first try since it ended
            LOG.error("the health port's process ended (exit code %s); starting another one", self._process.returncode)
            self._process = None
        try:
            process = self._process = await self._launch()
        except HealthPortFailed as exc:
            self._failures += 1
            delay = min(30.0, SNAPSHOT_INTERVAL * 2**self._failures)
            self._retry_at = asyncio.get_running_loop().time() + delay
            LOG.error("the health port's process could not start again: %s; next try in %g s", exc, delay)
            return
        self._failures = 0
        assert process.stdin is not None  # launched with stdin=PIPE
        process.stdin.write(self._snapshot)
        LOG.info("the health port answers again (pid %s)", process.pid)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._relaunch is not None:
            self._relaunch.cancel()
        process = self._process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()  # its stdin ends: it stops listening and exits
        try:
            await asyncio.wait_for(process.wait(), 5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


# --- the health process (this file run as a script: standard library only) --------------


class Probes:
    """Answers probes from the last snapshot; liveness from how old it is."""

    def __init__(self, stall_after: float) -> None:
        self.stall_after = stall_after
        self.ready: tuple[int, bytes] = (503, NOT_READY)
        self.heartbeat = time.monotonic()

    async def follow(self, snapshots: asyncio.StreamReader) -> None:
        """Take each snapshot (``STATUS JSON`` lines) as it comes, until the input ends."""
        while line := await snapshots.readline():
            status, _, body = line.rstrip(b"\n").partition(b" ")
            if status.isdigit() and body:
                self.ready = (int(status), body)
                self.heartbeat = time.monotonic()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                if len(head) > MAX_HEADER:
                    return
                method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0].rstrip("/")
                status, body = self.answer(method, path)
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, _REASONS.get(status, b"Error"), len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, method: str, path: str) -> tuple[int, bytes]:
        if method != "GET":
            return 405, b'{"message":"only GET is served on the health port"}'
        if path == "/v2/health/live":
            silent = time.monotonic() - self.heartbeat
            if silent > self.stall_after:
                return 503, json.dumps(
                    {"status": "stalled", "message": f"the server's event loop has not answered for {silent:.1f} s"}
                ).encode()
            return 200, b'{"status":"alive"}'
        if path == "/v2/health/ready":
            return self.ready
        return 404, b'{"message":"the health port serves /v2/health/live and /v2/health/ready"}'


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}


async def _serve_until_input_ends(host: str, port: int, stall_after: float) -> int:
    probes = Probes(stall_after)
    try:
        server = await asyncio.start_server(probes.serve, host, port, backlog=256)
    except OSError as exc:
        print(f"error {os.strerror(exc.errno) if exc.errno else exc}", flush=True)
        return 1
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    snapshots = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(snapshots), sys.stdin.buffer)
    await probes.follow(snapshots)
    server.close()
    return 0


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group: the server stops this process
    # (by closing its input), so the signal itself is ignored here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(asyncio.run(_serve_until_input_ends(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
