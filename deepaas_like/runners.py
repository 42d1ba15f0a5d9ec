"""Where a model's code runs: a pool of worker processes, or threads of the server.

Both runners hand out *slots* (a worker process, or a thread's turn): a call takes an
idle slot or waits for one (at most ``max_queue`` callers wait, then 503), runs on it
with an optional timeout (504), and gives it back. The event loop only awaits them and
never runs model code itself.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import multiprocessing
import queue
import threading
import time
from typing import Any, Callable, Generic, Mapping, TypeVar

from .adapter import ModelAdapter, execute_group, failure_from_exception, raise_failure
from .errors import ModelUnavailable, PredictTimeout, QueueFull
from .loading import PluginRef
from .process import NotStarted, WorkerDied, WorkerProcess, WorkerStartFailed
from .worker import WorkerConfig

LOG = logging.getLogger(__name__)
RESPAWN_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
RESULT_POST_INTERVAL = 0.001  # a thread hands finished results to the event loop at least this often
Slot = TypeVar("Slot")


class _Requeue:
    def __repr__(self) -> str:
        return "REQUEUE"


REQUEUE = _Requeue()
"""Outcome of a call that never started (its worker died first): run it elsewhere."""


def mp_context(start_method: str) -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(["deepaas_like.worker"])
    return context


class Runner(Generic[Slot]):
    """Idle slots, the callers waiting for one (bounded), and calls on a slot."""

    kind = "runner"

    def __init__(self, name: str, size: int, max_queue: int) -> None:
        self.name = name
        self.size = size
        self.max_queue = max_queue
        self.restarts = 0
        self._idle: collections.deque[Slot] = collections.deque()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._internal: set[asyncio.Future] = set()  # dispatch loops waiting: not a queue
        self._stopping = False

    # --- slots ------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot (the dispatch loops' own waits do not count)."""
        return sum(1 for f in self._waiters if not f.done() and f not in self._internal)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _usable(self, slot: Slot) -> bool:
        return True

    def _discard(self, slot: Slot) -> None:
        """A slot that was given back but may not serve again (old or dead worker)."""

    def try_acquire(self) -> Slot | None:
        """An idle slot now, or None (never waits)."""
        if self._stopping:
            return None
        while self._idle:
            slot = self._idle.popleft()
            if self._usable(slot):
                return slot
        return None

    async def acquire(self, bounded: bool = True) -> Slot:
        """An idle slot, waiting for one if needed; QueueFull past ``max_queue`` waiters."""
        if self._stopping:
            raise ModelUnavailable(f"Model '{self.name}' is stopping", model=self.name)
        slot = self.try_acquire()
        if slot is not None:
            return slot
        if bounded and self.waiting >= self.max_queue:
            raise QueueFull(self.name, self.max_queue)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if not bounded:
            self._internal.add(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())
            raise
        finally:
            self._internal.discard(future)

    def release(self, slot: Slot) -> None:
        if self._stopping or not self._usable(slot):
            self._discard(slot)
            return
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(slot)
                return
        self._idle.append(slot)

    def _fail_waiters(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(ModelUnavailable(f"Model '{self.name}' is stopping", model=self.name))

    # --- calls ------------------------------------------------------------------

    async def run_group(
        self, slot: Slot, method: str, payloads: list[Any], timeout: float | None, together: bool = False
    ) -> list[Any]:
        """Run a group of calls on ``slot`` (which this gives back), in order.

        One outcome per call: ``("ok"|"err", value)``; a :class:`DeepaasError` (504 on
        timeout, 503 if the worker died while running it); or :data:`REQUEUE` for a
        call that never started and may run on another worker. ``timeout`` bounds each
        call (``together``: the whole batch).
        """
        raise NotImplementedError

    async def call(self, method: str, kwargs: Mapping[str, Any], timeout: float | None = None) -> Any:
        """``method(**kwargs)`` on the model; raises the API error if it failed."""
        slot = await self.acquire()
        (outcome,) = await self.run_group(slot, method, [kwargs], timeout)
        if outcome is REQUEUE:
            raise ModelUnavailable(f"The worker of model '{self.name}' went away; retry shortly", model=self.name)
        if isinstance(outcome, BaseException):
            raise outcome
        kind, value = outcome
        if kind == "err":
            raise_failure(self.name, method, value)
        return value

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        raise NotImplementedError

    async def reload(self) -> None:
        raise NotImplementedError

    async def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class ProcessRunner(Runner[WorkerProcess]):
    """``size`` worker processes, each owning a warm instance of the model.

    A worker that dies fails only the call it was running, with a 503, and is
    replaced and re-warmed in the background; one that overruns the timeout is
    killed (504) and replaced the same way. :meth:`reload` swaps in a fresh set of
    warm workers at once.
    """

    kind = "process"

    def __init__(
        self,
        name: str,
        ref: PluginRef,
        config: WorkerConfig,
        size: int,
        context: multiprocessing.context.BaseContext,
        max_queue: int = 128,
    ) -> None:
        super().__init__(name, size, max_queue)
        self._ref = ref
        self._config = config
        self._context = context
        self._current: set[WorkerProcess] = set()  # the generation that takes calls
        self._alive: set[WorkerProcess] = set()  # every process not yet reaped
        self._background: set[asyncio.Task] = set()

    @property
    def ready(self) -> bool:
        return any(w.accepting for w in self._current)

    def worker_pids(self) -> list[int]:
        return sorted(w.pid for w in self._current if w.pid is not None and not w.dead)

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "workers": len([w for w in self._current if not w.dead]),
            "workers_wanted": self.size,
            "busy": sum(1 for w in self._current if w.busy),
            "waiting": self.waiting,
            "restarts": self.restarts,
        }

    def _usable(self, worker: WorkerProcess) -> bool:
        return worker.accepting and worker in self._current

    def _discard(self, worker: WorkerProcess) -> None:
        if not worker.dead:
            self._in_background(worker.stop())

    def _in_background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _new_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self._ref, self._config, self._context, on_exit=self._on_exit)
        self._alive.add(worker)
        return worker

    async def _start_set(self) -> list[WorkerProcess]:
        workers = [self._new_worker() for _ in range(self.size)]
        results = await asyncio.gather(*(w.start() for w in workers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(w.stop(0) for w in workers), return_exceptions=True)
            raise failures[0]
        return workers

    async def start(self) -> None:
        for worker in await self._start_set():
            self._current.add(worker)
            self.release(worker)
        LOG.info("model %s: %d worker process(es) ready: %s", self.name, self.size, self.worker_pids())

    async def reload(self) -> None:
        """Start a fresh, warm set of workers, then route every new call to them."""
        fresh = await self._start_set()
        old_idle = list(self._idle)
        self._idle.clear()
        self._current = set(fresh)
        for worker in fresh:
            self.release(worker)
        for worker in old_idle:
            self._discard(worker)
        LOG.info("model %s: workers reloaded: %s", self.name, self.worker_pids())

    async def run_group(
        self, worker: WorkerProcess, method: str, payloads: list[Any], timeout: float | None, together: bool = False
    ) -> list[Any]:
        try:
            futures = worker.submit(method, payloads, together=together)
        except WorkerDied:
            self.release(worker)
            return [REQUEUE] * len(payloads)
        outcomes: list[Any] = []
        try:
            for index, future in enumerate(futures):
                wait = timeout if timeout and (index == 0 or not together) else None
                try:
                    outcomes.append(await (asyncio.wait_for(asyncio.shield(future), wait) if wait else future))
                except asyncio.TimeoutError:
                    LOG.warning("model %s: %s() overran %ss; replacing worker %s", self.name, method, timeout, worker.pid)
                    worker.kill()
                    late = PredictTimeout(self.name, timeout or 0)
                    outcomes += [late] + [late if together else REQUEUE] * (len(futures) - index - 1)
                    break
                except WorkerDied as exc:
                    outcomes.append(ModelUnavailable(
                        f"The worker of model '{self.name}' died while running {method}() "
                        f"(exit code {exc.exitcode}); a replacement is starting, retry shortly",
                        model=self.name,
                    ))
                except NotStarted:
                    outcomes.append(REQUEUE)
            return outcomes
        finally:
            self.release(worker)

    def _on_exit(self, worker: WorkerProcess) -> None:
        self._alive.discard(worker)
        if worker not in self._current:
            return
        self._current.discard(worker)
        if self._stopping:
            return
        self.restarts += 1
        LOG.error("model %s: worker %s ended (exit code %s); starting a replacement",
                  self.name, worker.pid, worker.exitcode)
        self._in_background(self._replace())

    async def _replace(self) -> None:
        for attempt in itertools.count():
            if self._stopping:
                return
            worker = self._new_worker()
            try:
                await worker.start()
            except WorkerStartFailed as exc:
                delay = RESPAWN_BACKOFF[min(attempt, len(RESPAWN_BACKOFF) - 1)]
                LOG.error("model %s: replacement worker failed to start: %s; retrying in %ss",
                          self.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                await worker.stop(0)
                return
            self._current.add(worker)
            self.release(worker)
            LOG.info("model %s: replacement worker %s ready", self.name, worker.pid)
            return

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for task in list(self._background):
            task.cancel()
        self._fail_waiters()
        self._idle.clear()
        await asyncio.gather(*(w.stop(timeout) for w in list(self._alive)), return_exceptions=True)
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


class DaemonThreads:
    """``count`` daemon threads running submitted callables, first come first served.

    Daemon threads, unlike a ThreadPoolExecutor's, do not hold up the interpreter's
    exit: a model call that never returns cannot keep the server from stopping.
    """

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on one of the threads, awaited from the event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                post(loop, _settle, future, None, exc)
            else:
                post(loop, _settle, future, result, None)

        self.submit(job)
        return await future

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


def post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Hand a result from a model thread to the event loop, if the server still runs."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: the server stopped while the call ran
        if not loop.is_closed():
            raise


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ThreadRunner(Runner[int]):
    """The model instance lives in the server process; calls run on ``size`` threads.

    No process hop: fastest for models that are cheap or release the GIL. A thread
    that overruns the timeout cannot be stopped: the caller gets its 504 and the
    thread's slot stays taken until the call returns. A crash of native code takes the
    server down with it, which is why process workers are the default.
    """

    kind = "thread"

    def __init__(self, name: str, adapter: ModelAdapter, size: int, warm: bool = True, max_queue: int = 128) -> None:
        super().__init__(name, size, max_queue)
        self._adapter = adapter
        self._warm = warm
        self._threads: DaemonThreads | None = None
        self._ready = False
        self._busy = 0

    @property
    def ready(self) -> bool:
        return self._ready

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "workers": self.size if self._ready else 0,
            "workers_wanted": self.size,
            "busy": self._busy,
            "waiting": self.waiting,
            "restarts": 0,
        }

    async def start(self) -> None:
        self._threads = DaemonThreads(self.size, f"deepaas-like-{self.name}")
        if self._warm:
            try:
                await self._threads.run(self._adapter.warm)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # as in a worker process: report, do not crash
                raise WorkerStartFailed(failure_from_exception(exc)) from None
        for slot in range(self.size):
            self.release(slot)
        self._ready = True

    async def run_group(
        self, slot: int, method: str, payloads: list[Any], timeout: float | None, together: bool = False
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in payloads]
        finished: list[tuple[int, Any]] = []
        last_post = [time.monotonic()]

        def resolve(chunk: list[tuple[int, Any]]) -> None:
            for index, outcome in chunk:
                if not futures[index].done():
                    futures[index].set_result(outcome)

        def finish(chunk: list[tuple[int, Any]], error: BaseException | None) -> None:
            resolve(chunk)
            self._busy -= 1
            self.release(slot)  # the slot is free only when the thread is
            for future in futures:  # only after a bug of ours
                if not future.done():
                    future.set_exception(error or RuntimeError("the call ended without a result"))

        def deliver(index: int, outcome: Any) -> None:  # in the model's thread
            finished.append((index, outcome))
            now = time.monotonic()
            if now - last_post[0] >= RESULT_POST_INTERVAL and index < len(payloads) - 1:
                chunk = finished[:]
                finished.clear()
                last_post[0] = now
                post(loop, resolve, chunk)

        def work() -> None:  # one wake-up of the event loop per group, at its end
            error = None
            try:
                execute_group(self._adapter, method, payloads, deliver)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                error = exc
            post(loop, finish, finished[:], error)

        self._busy += 1
        assert self._threads is not None, "the runner was not started"
        self._threads.submit(work)
        outcomes: list[Any] = []
        for index, future in enumerate(futures):
            wait = timeout if timeout and (index == 0 or not together) else None
            try:
                outcomes.append(await (asyncio.wait_for(asyncio.shield(future), wait) if wait else future))
            except asyncio.TimeoutError:  # the thread cannot be stopped; it finishes in the background
                late = PredictTimeout(self.name, timeout or 0)
                outcomes += [late] * (len(futures) - index)
                break
        return outcomes

    async def reload(self) -> None:
        await self.call("warm", {})

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._ready = False
        self._fail_waiters()
        if self._threads is not None:
            self._threads.stop()
