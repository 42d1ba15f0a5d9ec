"""Health on a port of its own (``--health-port``), answered from a thread of its own.

The main port's ``/v2/health/*`` share the event loop with every other request: under a
flood of thousands of clients they wait their turn like everything else. Probes of an
orchestrator (Kubernetes' liveness and readiness) should not: this listener runs its own
small event loop on its own thread, and answers in milliseconds whatever the main loop's
load. It never touches the models from its thread: the main loop publishes a readiness
snapshot and a heartbeat twice a second, and liveness fails (503) when that heartbeat
stops, i.e. when the main loop is stuck::

    GET :HEALTH_PORT/v2/health/live    200 {"status": "alive"}  | 503 when the main loop stalls
    GET :HEALTH_PORT/v2/health/ready   200 / 503, as on the main port (at most 0.5 s old)
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Callable

LOG = logging.getLogger(__name__)
SNAPSHOT_INTERVAL = 0.5
STALL_AFTER = 5.0  # seconds without a heartbeat: the main loop is stuck
READ_TIMEOUT = 5.0
MAX_HEADER = 8192


class HealthListener:
    def __init__(self, host: str, port: int, readiness: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self.host = host
        self.port = port
        self._readiness = readiness
        self._ready: tuple[int, bytes] = (503, b'{"status":"not ready","models":{}}')
        self._heartbeat = time.monotonic()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._ticker: asyncio.TimerHandle | None = None

    # --- the main loop's side ---------------------------------------------------------

    def start(self) -> None:
        """Start the thread and the periodic snapshot (call from the main loop)."""
        self._publish()
        self._thread = threading.Thread(target=self._run, name="deepaas-like-health", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._failure is not None:
            raise self._failure

    def _publish(self) -> None:
        try:
            status, body = self._readiness()
            self._ready = (status, json.dumps(body).encode())
        except Exception:  # the next tick tries again
            LOG.exception("readiness snapshot for the health port failed")
        self._heartbeat = time.monotonic()
        self._ticker = asyncio.get_running_loop().call_later(SNAPSHOT_INTERVAL, self._publish)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # --- the health thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, self.port, backlog=256))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._failure = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                if len(head) > MAX_HEADER:
                    return
                method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0].rstrip("/")
                status, body = self._answer(method, path)
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                    status, _REASONS.get(status, b"Error"), len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, method: str, path: str) -> tuple[int, bytes]:
        if method != "GET":
            return 405, b'{"message":"only GET is served on the health port"}'
        if path == "/v2/health/live":
            silent = time.monotonic() - self._heartbeat
            if silent > STALL_AFTER:
                return 503, json.dumps({"status": "stalled", "message": f"the server's event loop has not "
                                        f"answered for {silent:.1f} s"}).encode()
            return 200, b'{"status":"alive"}'
        if path == "/v2/health/ready":
            return self._ready
        return 404, b'{"message":"the health port serves /v2/health/live and /v2/health/ready"}'


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}
