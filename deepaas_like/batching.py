"""Adaptive batching: concurrent predictions of one model grouped into one call.

Requests queue up; each of the model's workers runs a dispatcher that, once it holds
a free worker, takes up to ``max_batch_size`` queued requests. If fewer are waiting,
it waits at most ``max_batch_time_ms`` (counted from the oldest request's arrival)
for more. Under load the queue fills while the workers are busy, so batches grow
without any waiting; when idle, a request waits at most ``max_batch_time_ms``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from .adapter import raise_failure
from .errors import DeepaasError, ModelUnavailable, QueueFull
from .runners import Runner
from .settings import ModelSettings

LOG = logging.getLogger(__name__)


@dataclass(eq=False)
class _Row:
    kwargs: Mapping[str, Any]
    future: asyncio.Future
    arrived: float


@dataclass
class BatchStats:
    """How many batches of each size ran (read by /metrics)."""

    sizes: collections.Counter = field(default_factory=collections.Counter)

    @property
    def batches(self) -> int:
        return sum(self.sizes.values())


class Batcher:
    def __init__(self, runner: Runner, options: ModelSettings) -> None:
        self._runner = runner
        self._max_size = options.max_batch_size
        self._max_wait = options.max_batch_time_ms / 1000.0
        self._max_queue = options.max_queue
        self._timeout = options.predict_timeout or None
        self._queue: collections.deque[_Row] = collections.deque()
        self._arrived = asyncio.Event()
        self._dispatchers: list[asyncio.Task] = []
        self.stats = BatchStats()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._dispatchers = [
            asyncio.get_running_loop().create_task(self._dispatch(), name=f"batch {self._runner.name} {i}")
            for i in range(self._runner.size)
        ]

    async def stop(self) -> None:
        for task in self._dispatchers:
            task.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        while self._queue:
            row = self._queue.popleft()
            if not row.future.done():
                row.future.cancel()

    async def submit(self, kwargs: Mapping[str, Any]) -> Any:
        """Queue one prediction and wait for its own result."""
        if len(self._queue) >= self._max_queue:
            raise QueueFull(self._runner.name, self._max_queue)
        loop = asyncio.get_running_loop()
        row = _Row(kwargs, loop.create_future(), loop.time())
        self._queue.append(row)
        self._arrived.set()
        kind, value = await row.future
        if kind == "err":
            raise_failure(self._runner.name, "predict", value)
        return value

    async def _dispatch(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            slot = await self._runner.acquire(bounded=False)
            rows = await self._collect()
            if not rows:
                self._runner.release(slot)
                continue
            await self._run(slot, rows)

    async def _collect(self) -> list[_Row]:
        loop = asyncio.get_running_loop()
        self._drop_abandoned()
        if self._queue and len(self._queue) < self._max_size:
            deadline = self._queue[0].arrived + self._max_wait
            while len(self._queue) < self._max_size and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            self._drop_abandoned()
        rows = []
        while self._queue and len(rows) < self._max_size:
            rows.append(self._queue.popleft())
        return rows

    def _drop_abandoned(self) -> None:
        """Requests whose client went away need no prediction."""
        if any(row.future.done() for row in self._queue):
            self._queue = collections.deque(row for row in self._queue if not row.future.done())

    async def _run(self, slot: Any, rows: list[_Row]) -> None:
        self.stats.sizes[len(rows)] += 1
        try:
            kind, value = await self._runner.run(slot, "predict_many", [r.kwargs for r in rows], self._timeout)
        except asyncio.CancelledError:
            for row in rows:
                if not row.future.done():
                    row.future.set_exception(ModelUnavailable(f"Model '{self._runner.name}' is stopping"))
            raise
        except Exception as exc:  # worker died (503), timed out (504), or worse: every row shares it
            if not isinstance(exc, DeepaasError):
                LOG.exception("model %s: batched call failed", self._runner.name)
            for row in rows:
                if not row.future.done():
                    row.future.set_exception(exc)
            return
        results = value if kind == "ok" else [(kind, value)] * len(rows)
        for row, result in zip(rows, results):
            if not row.future.done():
                row.future.set_result(result)
