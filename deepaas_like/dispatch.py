"""Every prediction of a model goes through one dispatcher: a bounded queue, and groups.

Requests wait in the model's queue (at most ``max_queue``; then 503). Each worker slot
has a dispatch loop: once it holds a free worker it takes a *group* of queued
requests and hands it over in one hop (one message to a worker process, one task to
a thread), and each result goes back to its own caller as soon as it exists.

* Batching off: a group is whatever is queued (its fair share across the workers,
  at most ``COALESCE_LIMIT``); the plugin's ``predict`` runs once per request. Under
  load this removes most process/thread hops; when idle a request goes alone at once.
* Batching on (``max_batch_size`` > 1): a group has up to ``max_batch_size`` requests,
  waiting at most ``max_batch_time_ms`` (from the oldest request's arrival) to fill
  once a worker is free, and runs as one ``predict_batch`` call when the plugin has
  one. A busy server fills batches without any waiting.

If a worker process dies, only the request it was running fails (503); the requests
queued behind it in the same group go back to the queue and run elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .adapter import raise_failure
from .errors import ModelUnavailable, QueueFull
from .runners import REQUEUE, Runner
from .settings import ModelSettings

LOG = logging.getLogger(__name__)
COALESCE_LIMIT = 32


@dataclass(eq=False)
class _Request:
    kwargs: Mapping[str, Any]
    future: asyncio.Future
    arrived: float


@dataclass
class BatchStats:
    """How many batches of each size ran (read by /metrics; batching only)."""

    sizes: collections.Counter = field(default_factory=collections.Counter)


class Dispatcher:
    def __init__(self, runner: Runner, options: ModelSettings, has_predict_batch: bool) -> None:
        self._runner = runner
        self.batching = options.batching
        self._method = "predict_batch" if self.batching and has_predict_batch else "predict"
        self._together = self._method == "predict_batch"
        self._timeout = options.predict_timeout or None
        if self.batching:
            self._limit, self._max_wait = options.max_batch_size, options.max_batch_time_ms / 1000.0
        elif runner.kind == "thread" and self._timeout:
            self._limit, self._max_wait = 1, 0.0  # a late thread cannot hand back the rest of a group
        else:
            self._limit, self._max_wait = COALESCE_LIMIT, 0.0
        self._max_queue = options.max_queue
        self._queue: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._loops: list[asyncio.Task] = []
        self.stats = BatchStats()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._dispatch(), name=f"dispatch {self._runner.name} {i}")
            for i in range(self._runner.size)
        ]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        stopping = ModelUnavailable(f"Model '{self._runner.name}' is stopping", model=self._runner.name)
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(stopping)

    async def submit(self, kwargs: Mapping[str, Any]) -> Any:
        """Queue one prediction and wait for its own result."""
        if len(self._queue) >= self._max_queue:
            raise QueueFull(self._runner.name, self._max_queue)
        loop = asyncio.get_running_loop()
        outcome = None
        if not self._queue and not self.batching and (slot := self._runner.try_acquire()) is not None:
            # Nobody waits and a worker is idle: go straight to it from this task.
            (outcome,) = await self._runner.run_group(slot, self._method, [kwargs], self._timeout, self._together)
            if isinstance(outcome, BaseException):
                raise outcome
        if outcome is None or outcome is REQUEUE:
            request = _Request(kwargs, loop.create_future(), loop.time())
            self._queue.append(request)
            self._arrived.set()
            outcome = await request.future
        kind, value = outcome
        if kind == "err":
            raise_failure(self._runner.name, "predict", value)
        return value

    async def _dispatch(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            slot = await self._runner.acquire(bounded=False)
            group = await self._take_group()
            if not group:
                self._runner.release(slot)
                continue
            await self._run(slot, group)

    async def _take_group(self) -> list[_Request]:
        loop = asyncio.get_running_loop()
        self._drop_abandoned()
        if self._max_wait and self._queue and len(self._queue) < self._limit:
            deadline = self._queue[0].arrived + self._max_wait
            while len(self._queue) < self._limit and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            self._drop_abandoned()
        size = self._limit
        if not self.batching:  # share what is queued among the idle workers
            size = min(size, max(1, math.ceil(len(self._queue) / (self._runner.idle + 1))))
        group = []
        while self._queue and len(group) < size:
            group.append(self._queue.popleft())
        return group

    def _drop_abandoned(self) -> None:
        """Requests whose caller went away need no prediction."""
        if any(request.future.done() for request in self._queue):
            self._queue = collections.deque(r for r in self._queue if not r.future.done())

    async def _run(self, slot: Any, group: list[_Request]) -> None:
        if self.batching:
            self.stats.sizes[len(group)] += 1
        try:
            outcomes = await self._runner.run_group(
                slot, self._method, [r.kwargs for r in group], self._timeout, self._together
            )
        except asyncio.CancelledError:
            self._queue.extendleft(reversed(group))  # failed by stop()
            raise
        except Exception as exc:  # a bug of ours: fail the group, keep dispatching
            LOG.exception("model %s: dispatching a group failed", self._runner.name)
            outcomes = [exc] * len(group)
        retry = []
        for request, outcome in zip(group, outcomes, strict=True):
            if outcome is REQUEUE:
                retry.append(request)
            elif request.future.done():
                continue
            elif isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
        if retry:
            self._queue.extendleft(reversed(retry))
            self._arrived.set()
