"""A sequential prober: one request at a time, at a fixed pace, beside a load run.

    with Probe(port, "GET", "/v2/health/live") as health:
        run_wrk(...)                       # the flood
    health.summary()["lat_ms"]["p99"]

What a liveness checker sees while the server is flooded: each probe opens a new
connection (as a Kubernetes ``httpGet`` probe does) unless ``keep_alive=True``, sends
the request, reads the whole answer, and records its status, latency and whether it
carried ``Retry-After``. A probe that fails (refused, reset, no answer within
``timeout_s``) counts as an error with the time it took. Probes start every
``interval_s`` seconds (at once when the previous one took longer), the first after
``start_delay_s``; the thread stops when the ``with`` block ends or after ``max_seconds``.
"""

from __future__ import annotations

import http.client
import threading
import time


def percentile(values: list[float], fraction: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else None


def as_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class Probe(threading.Thread):
    def __init__(
        self,
        port: int,
        method: str,
        path: str,
        *,
        interval_s: float = 0.05,
        timeout_s: float = 5.0,
        keep_alive: bool = False,
        start_delay_s: float = 0.0,
        max_seconds: float = 900.0,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.method, self.path = port, method, path
        self.interval_s, self.timeout_s, self.keep_alive = interval_s, timeout_s, keep_alive
        self.start_delay_s = start_delay_s
        self.deadline = time.monotonic() + max_seconds
        self.samples: list[tuple[int | None, float, bool]] = []  # status (None: failed), seconds, Retry-After
        self._stopping = threading.Event()
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self) -> "Probe":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.join(self.timeout_s + 5)

    def run(self) -> None:
        self._stopping.wait(self.start_delay_s)
        while not self._stopping.is_set() and time.monotonic() < self.deadline:
            started = time.perf_counter()
            self.samples.append(self._one())
            self._stopping.wait(max(0.0, self.interval_s - (time.perf_counter() - started)))
        if self._connection is not None:
            self._connection.close()

    def _one(self) -> tuple[int | None, float, bool]:
        started = time.perf_counter()
        try:
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
            self._connection.request(self.method, self.path, body=b"" if self.method == "POST" else None)
            response = self._connection.getresponse()
            response.read()
            sample = (response.status, time.perf_counter() - started, response.getheader("Retry-After") is not None)
            if not self.keep_alive or response.will_close:
                self._connection.close()
                self._connection = None
            return sample
        except (OSError, http.client.HTTPException):
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            return None, time.perf_counter() - started, False

    def summary(self, status: int | None = None) -> dict:
        """Counts, statuses and latency percentiles (ms); ``status`` keeps only those answers."""
        answered = [s for s in self.samples if s[0] is not None]
        chosen = [s for s in answered if status is None or s[0] == status]
        latencies = [s[1] for s in (chosen if status is not None else self.samples)]
        statuses: dict[int, int] = {}
        for code, _, _ in answered:
            statuses[code] = statuses.get(code, 0) + 1
        return {
            "path": self.path,
            "method": self.method,
            "keep_alive": self.keep_alive,
            "interval_ms": self.interval_s * 1000,
            "probes": len(self.samples),
            "failed": len(self.samples) - len(answered),
            "status_counts": statuses,
            "with_retry_after": sum(1 for s in chosen if s[2]),
            "counted": len(chosen),
            "lat_ms": {
                name: as_ms(percentile(latencies, q))
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
        }
