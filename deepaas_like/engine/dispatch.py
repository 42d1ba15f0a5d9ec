"""Every call of a model goes through one dispatcher: one queue, one bound, and groups.

Calls (predictions, synchronous or asynchronous, and the server's own ``get_metadata``)
wait in the model's queue; asynchronous predictions (durable jobs, which can wait) run
only when no synchronous call is waiting, so that they never crowd out clients who wait
for their answer. Each worker slot has a dispatch loop: once it holds a free
worker it takes a *group* of queued calls and hands it over in one hop (one message to
a worker process, one task to a thread), and each outcome goes back to its own caller
as soon as it exists.

* Batching off: a group is whatever predictions are queued (their fair share across
  the workers, at most ``COALESCE_LIMIT``); ``predict`` runs once per request. Under
  load this removes most process/thread hops; when idle a request goes alone at once.
* Batching on (``max_batch_size`` > 1): a group has up to ``max_batch_size``
  predictions, waiting at most ``max_batch_time_ms`` (from the oldest one's arrival)
  to fill once a worker is free, and runs as one ``predict_batch`` call when the
  plugin has one. A busy server fills batches without any waiting.

**Admission is by time, not by count.** A new prediction is refused (503 with
``Retry-After``) only when the wait it would face — queue depth × recent service time
÷ workers — exceeds ``--max-queue-wait``; ``--max-queue`` is an optional hard cap on
the depth. Many clients with quick answers never see an error; a flood that the model
cannot absorb is shed at once, cheaply.

If a worker process dies, only the call it was running fails (503); the calls queued
behind it in the same group go back to the queue and run elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ModelUnavailable, QueueFull
from ..settings import ModelSettings
from .calls import NotStarted, Outcome, Unserved
from .executors import Executor

LOG = logging.getLogger(__name__)
COALESCE_LIMIT = 32
PREDICT = "predict"
SERVICE_TIME_WEIGHT = 0.2  # weight of the newest group in the moving average of service time


@dataclass(eq=False, slots=True)
class Call:
    """One queued call of a model method, and the future its caller awaits."""

    method: str
    kwargs: Mapping[str, Any]
    future: asyncio.Future[Outcome]
    arrived: float
    background: bool = False
    on_start: Callable[[], None] | None = None


class CallQueue:
    """The model's one queue: calls in arrival order, background calls after the others."""

    def __init__(self) -> None:
        self._now: collections.deque[Call] = collections.deque()
        self._later: collections.deque[Call] = collections.deque()

    def __len__(self) -> int:
        return len(self._now) + len(self._later)

    @property
    def foreground(self) -> int:
        """Calls whose callers wait for the answer (the admission bound counts these)."""
        return len(self._now)

    def append(self, call: Call) -> None:
        (self._later if call.background else self._now).append(call)

    def _head_deque(self) -> collections.deque[Call]:
        return self._now if self._now else self._later

    def head(self) -> Call | None:
        queue = self._head_deque()
        return queue[0] if queue else None

    def take(self, limit: int, method: str) -> list[Call]:
        """Up to ``limit`` calls of ``method`` from the head, of one priority."""
        queue = self._head_deque()
        group: list[Call] = []
        while queue and len(group) < limit and queue[0].method == method:
            group.append(queue.popleft())
        return group

    def put_back(self, calls: list[Call]) -> None:
        """Calls that did not run go back to the head of their queue, in order."""
        for call in reversed(calls):
            (self._later if call.background else self._now).appendleft(call)

    def drop_abandoned(self) -> None:
        """Calls whose caller went away need no answer."""
        for name in ("_now", "_later"):
            queue = getattr(self, name)
            if any(call.future.done() for call in queue):
                setattr(self, name, collections.deque(c for c in queue if not c.future.done()))

    def drain(self) -> list[Call]:
        calls = [*self._now, *self._later]
        self._now.clear()
        self._later.clear()
        return calls


@dataclass(eq=False, slots=True)
class _RunningGroup:
    """A group on a worker, for the admission estimate: when it started, how many calls."""

    started: float
    calls: int
    finished: bool = False


@dataclass
class BatchStats:
    """How many batches of each size ran (read by /metrics; batching only)."""

    sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class Dispatcher:
    """The queue of one model's calls, and the loops that feed its runner."""

    def __init__(self, runner: Executor, options: ModelSettings, has_predict_batch: bool) -> None:
        self._runner = runner
        self.name = runner.name
        self.batching = options.batching
        self._predict_method = "predict_batch" if self.batching and has_predict_batch else PREDICT
        self._timeout = options.predict_timeout or None
        if self.batching:
            self._limit, self._max_wait = options.max_batch_size, options.max_batch_time_ms / 1000.0
        else:
            self._limit, self._max_wait = COALESCE_LIMIT, 0.0
        self._max_queue = options.max_queue
        self._wait_budget = options.max_queue_wait
        self._queue = CallQueue()
        # The event loop, kept: on Python 3.11 each asyncio.get_running_loop() makes a
        # getpid() system call (its check for a fork), and this is asked on every call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        # The running groups, oldest first; a finished group leaves once every group older
        # than it has finished.
        self._running: collections.deque[_RunningGroup] = collections.deque()
        self._service_time = 0.0  # seconds per call, moving average of the recent groups
        self.stats = BatchStats()

    @property
    def waiting(self) -> int:
        """Calls waiting for a worker (the queue depth)."""
        return len(self._queue)

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._dispatch(), name=f"dispatch {self.name} {i}") for i in range(self._runner.size)
        ]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        stopping = Unserved(ModelUnavailable(f"Model '{self.name}' is stopping", model=self.name))
        for call in self._queue.drain():
            if not call.future.done():
                call.future.set_result(stopping)

    # --- admission -----------------------------------------------------------------

    def expected_wait(self) -> float:
        """Seconds a call queued now would wait for a worker (an estimate)."""
        depth = self._queue.foreground
        if not depth:
            return 0.0
        per_call = self._service_time
        if self._running:  # the oldest running group (the first one in) says more if it is slow
            oldest = self._running[0]
            per_call = max(per_call, (self._event_loop().time() - oldest.started) / oldest.calls)
        return depth * per_call / self._runner.size

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def _admit(self) -> None:
        depth = self._queue.foreground
        if not depth:
            return
        if self._max_queue and depth >= self._max_queue:
            raise QueueFull(
                self.name,
                f"{depth} requests are already waiting (--max-queue {self._max_queue})",
                retry_after=max(1, math.ceil(self.expected_wait())),
            )
        wait = self.expected_wait()
        if wait > self._wait_budget:
            raise QueueFull(
                self.name,
                f"a new request would wait about {wait:.1f} s for a worker (--max-queue-wait {self._wait_budget:g} s)",
                retry_after=max(1, math.ceil(wait - self._wait_budget)),
            )

    # --- calls ---------------------------------------------------------------------

    async def call(
        self,
        method: str,
        kwargs: Mapping[str, Any],
        *,
        admit: bool = True,
        background: bool = False,
        on_start: Callable[[], None] | None = None,
    ) -> Outcome:
        """Queue one call of ``method`` and wait for its own outcome.

        ``admit``: apply the admission bound (synchronous predictions); the server's own
        calls (``get_metadata``) are never refused. ``background``: a call nobody waits
        for (an asynchronous prediction), run when no other call waits; ``on_start`` is
        called when it begins.
        """
        if admit:
            self._admit()
        if method == PREDICT and not background and not self._queue and not self.batching:
            slot = self._runner.take_idle()
            if slot is not None:  # nobody waits and a worker is idle: go straight to it
                (outcome,) = await self._run(slot, method, [kwargs])
                if not isinstance(outcome, NotStarted):
                    return outcome
        loop = self._event_loop()
        call = Call(method, kwargs, loop.create_future(), loop.time(), background, on_start)
        self._queue.append(call)
        self._arrived.set()
        return await call.future

    async def _run(self, slot: Any, method: str, rows: list[Mapping[str, Any]]) -> list[Outcome]:
        """Run ``rows`` of ``method`` on ``slot``, timing it for the admission estimate."""
        predict = method == PREDICT
        loop = self._event_loop()
        started = loop.time()
        group = _RunningGroup(started, len(rows))
        self._running.append(group)
        try:
            return await self._runner.run_group(
                slot,
                self._predict_method if predict else method,
                rows,
                self._timeout if predict else None,
                together=predict and self._predict_method != PREDICT,
            )
        finally:
            group.finished = True
            while self._running and self._running[0].finished:
                self._running.popleft()
            if predict:
                per_call = (loop.time() - started) / len(rows)
                weight = SERVICE_TIME_WEIGHT if self._service_time else 1.0
                self._service_time += weight * (per_call - self._service_time)

    # --- dispatch loops ------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            slot = await self._runner.next_slot()
            group = await self._take_group()
            if not group:
                self._runner.release(slot)
                continue
            await self._run_group(slot, group)

    async def _take_group(self) -> list[Call]:
        """The calls at the head of the queue that run together: same method, up to the limit."""
        self._queue.drop_abandoned()
        head = self._queue.head()
        if head is None:
            return []
        if head.method != PREDICT:
            return self._queue.take(1, head.method)
        # Wait for a batch to fill only while other calls run: then more are coming and the wait
        # pays. With nothing in flight (one client, a quiet server) the call goes at once.
        if self._max_wait and len(self._queue) < self._limit and self._running:
            await self._fill(head.arrived + self._max_wait)
            self._queue.drop_abandoned()
        size = self._limit
        if not self.batching:  # share what is queued among the idle workers
            size = min(size, max(1, math.ceil(len(self._queue) / (self._runner.idle + 1))))
        return self._queue.take(size, PREDICT)

    async def _fill(self, deadline: float) -> None:
        """Wait for more predictions until the batch is full or ``deadline`` passes."""
        loop = self._event_loop()
        while len(self._queue) < self._limit and (left := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                return

    async def _run_group(self, slot: Any, group: list[Call]) -> None:
        if self.batching and group[0].method == PREDICT:
            self.stats.sizes[len(group)] += 1
        for call in group:
            if call.on_start is not None:
                call.on_start()
        try:
            outcomes = await self._run(slot, group[0].method, [call.kwargs for call in group])
        except asyncio.CancelledError:
            self._queue.put_back(group)  # answered by stop()
            raise
        except Exception as exc:  # a bug of ours: fail the group, keep dispatching
            LOG.exception("model %s: dispatching a group failed", self.name)
            outcomes = [
                Unserved(ModelUnavailable(f"Model '{self.name}' failed to run the call: {exc}", model=self.name))
            ] * len(group)
        retry = []
        for call, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, NotStarted):
                retry.append(call)
            elif not call.future.done():
                call.future.set_result(outcome)
        if retry:
            self._queue.put_back(retry)
            self._arrived.set()
