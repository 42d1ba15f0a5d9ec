"""Where a model's code runs: a pool of worker processes, or threads of the server.

Both runners hand out *slots* (a worker process, or a thread's turn) to the model's
dispatcher (:mod:`deepaas_like.dispatch`), which owns the one queue of calls. A group
of calls runs on a slot with an optional timeout per call and ends with one
:data:`~deepaas_like.calls.Outcome` per call. The event loop only awaits them and never
runs model code itself.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable, Generic, Sequence, TypeVar

from .adapter import ModelAdapter, execute, execute_group
from .calls import NOT_STARTED, CallFailure, Outcome, Unserved, failure_from_exception
from .errors import ModelUnavailable, PredictTimeout
from .process import WorkerLauncher, WorkerProcess, WorkerStartFailed

LOG = logging.getLogger(__name__)
RESPAWN_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
RESULT_POST_INTERVAL = 0.001  # a thread hands finished results to the event loop at least this often
Slot = TypeVar("Slot")


class Runner(Generic[Slot]):
    """A model's slots (idle ones wait in a pool) and groups of calls run on a slot.

    Subclasses say how a group starts on a slot (:meth:`_launch`) and what giving up
    on it after a timeout means (:meth:`_abandon`); the rest is shared.
    """

    kind = "runner"
    affine = False  # slots hold some keys (models loaded in a shared worker): prefer them

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.restarts = 0
        self._idle: collections.deque[Slot] = collections.deque()
        self._slot_waiters: collections.deque[tuple[asyncio.Future[Slot], Any]] = collections.deque()
        self._stopping = False
        self.replacing = 0  # replacements of lost slots under way

    # --- slots ------------------------------------------------------------------

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _usable(self, slot: Slot) -> bool:
        return True

    def _discard(self, slot: Slot) -> None:
        """A slot that was given back but may not serve again (old or dead worker)."""

    def _holds(self, slot: Slot, key: Any) -> bool:
        """Whether ``slot`` already holds what a call for ``key`` needs (``affine`` runners)."""
        return False

    def take_idle(self, key: Any = None) -> Slot | None:
        """An idle slot now (one that holds ``key``, if any does), or None (never waits)."""
        if self._stopping:
            return None
        if self.affine and key is not None:
            for slot in self._idle:
                if self._holds(slot, key) and self._usable(slot):
                    self._idle.remove(slot)
                    return slot
        while self._idle:
            slot = self._idle.pop()  # the one that served last: its caches are warm
            if self._usable(slot):
                return slot
        return None

    async def next_slot(self, key: Any = None) -> Slot:
        """The next slot that becomes idle (the dispatcher's loops wait here)."""
        slot = self.take_idle(key)
        if slot is not None:
            return slot
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append((future, key))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            raise

    def release(self, slot: Slot) -> None:
        if self._stopping or not self._usable(slot):
            self._discard(slot)
            return
        waiters = self._slot_waiters
        while waiters and waiters[0][0].done():
            waiters.popleft()
        if not waiters:
            self._idle.append(slot)
            return
        index = 0
        if self.affine:  # the first waiter whose model this slot holds, else the first
            index = next((i for i, (future, key) in enumerate(waiters)
                          if not future.done() and key is not None and self._holds(slot, key)), 0)
        future, _ = waiters[index]
        del waiters[index]
        future.set_result(slot)

    # --- groups of calls ------------------------------------------------------------

    async def run_group(
        self,
        slot: Slot,
        method: str,
        payloads: Sequence[Any],
        timeout: float | None,
        together: bool = False,
        target: Any = None,
    ) -> list[Outcome]:
        """Run a group of calls on ``slot`` (which this gives back), in order.

        One outcome per call, as they come. ``timeout`` bounds each call (``together``:
        the whole group, run as one batch); at a timeout the calls that had started are
        :class:`Unserved` with a 504, the rest :data:`NOT_STARTED` (to run elsewhere).
        ``target``: which of the models a shared worker hosts (see :mod:`deepaas_like.worker`).
        """
        futures = self._launch(slot, method, payloads, together, target)
        outcomes: list[Outcome] = []
        for index, future in enumerate(futures):
            wait = timeout if timeout and (index == 0 or not together) else None
            try:
                outcomes.append(await (asyncio.wait_for(asyncio.shield(future), wait) if wait else future))
            except asyncio.TimeoutError:
                started = len(futures) if together else self._abandon(slot, index, method)
                late = Unserved(PredictTimeout(self.name, timeout or 0))
                outcomes += [late] * (started - index) + [NOT_STARTED] * (len(futures) - started)
                break
        return outcomes

    def _launch(
        self, slot: Slot, method: str, payloads: Sequence[Any], together: bool, target: Any
    ) -> list[asyncio.Future[Outcome]]:
        """Start the group on ``slot``; one future per call. Gives the slot back when done."""
        raise NotImplementedError

    def _abandon(self, slot: Slot, index: int, method: str) -> int:
        """Give up on the group running on ``slot`` (call ``index`` overran); how many calls started."""
        raise NotImplementedError

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        raise NotImplementedError

    async def reload(self) -> None:
        """Serve every later call with a freshly warmed model (after a training)."""
        raise NotImplementedError

    async def _replacement(self) -> None:
        self.replacing += 1
        try:
            await self._replace()
        finally:
            self.replacing -= 1

    async def _replace(self) -> None:
        """Start a slot in place of a lost one (retrying, with back-off)."""
        raise NotImplementedError

    def new_training(self, *, log_file: str | None = None,
                     on_progress: Callable[[float, str | None], None] | None = None) -> Any:
        """A training run where this runner's workers live, or None: a process of the server's own."""
        return None

    def _stop_waiting(self) -> None:
        self._stopping = True
        self._idle.clear()
        while self._slot_waiters:
            future, _ = self._slot_waiters.popleft()
            if not future.done():
                future.set_exception(ModelUnavailable(f"Model '{self.name}' is stopping", model=self.name))

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

    def __init__(self, name: str, launcher: WorkerLauncher, size: int) -> None:
        super().__init__(name, size)
        self._launcher = launcher
        self._current: set[WorkerProcess] = set()  # the generation that takes calls
        self._alive: set[WorkerProcess] = set()  # every process not yet reaped
        self._background: set[asyncio.Task] = set()

    @property
    def ready(self) -> bool:
        return any(w.accepting for w in self._current)

    def worker_pids(self) -> list[int]:
        return sorted(w.serving_pid or w.pid for w in self._current if w.pid is not None and not w.dead)

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "workers": len([w for w in self._current if not w.dead]),
            "workers_wanted": self.size,
            "busy": sum(1 for w in self._current if w.busy),
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
        worker = self._launcher.worker(on_exit=self._on_exit, on_event=self._on_event)
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
            self._on_ready(worker)
            self.release(worker)
        LOG.info("model %s: %d worker process(es) ready: %s", self.name, self.size, self.worker_pids())

    async def reload(self) -> None:
        """Start a fresh, warm set of workers, then route every new call to them."""
        fresh = await self._start_set()
        old_idle = list(self._idle)
        self._idle.clear()
        self._current = set(fresh)
        for worker in fresh:
            self._on_ready(worker)
            self.release(worker)
        for worker in old_idle:
            self._discard(worker)
        LOG.info("model %s: workers reloaded: %s", self.name, self.worker_pids())

    def _launch(
        self, worker: WorkerProcess, method: str, payloads: Sequence[Any], together: bool, target: Any
    ) -> list[asyncio.Future[Outcome]]:
        futures = worker.submit(method, list(payloads), together=together, target=target)
        futures[-1].add_done_callback(lambda _: self.release(worker))
        return futures

    def _abandon(self, worker: WorkerProcess, index: int, method: str) -> int:
        LOG.warning("model %s: %s() overran its timeout; replacing worker %s", self.name, method, worker.pid)
        worker.kill()  # the calls behind the late one never start
        return index + 1

    def _on_event(self, worker: WorkerProcess, name: str, data: Any) -> None:
        """An event the worker's plugin reported (see :class:`SharedPool`)."""

    def _on_ready(self, worker: WorkerProcess) -> None:
        """A started worker begins to take calls."""

    def _on_exit(self, worker: WorkerProcess) -> None:
        self._alive.discard(worker)
        if worker not in self._current:
            return
        self._current.discard(worker)
        if self._stopping:
            return
        self.restarts += 1
        if worker.recycled:
            LOG.info("model %s: worker %s ended after %s; starting a fresh one", self.name, worker.pid,
                     worker.recycled)
        else:
            LOG.error("model %s: worker %s ended (exit code %s); starting a replacement",
                      self.name, worker.pid, worker.exitcode)
        self._in_background(self._replacement())

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
            self._on_ready(worker)
            self.release(worker)
            LOG.info("model %s: replacement worker %s ready", self.name, worker.pid)
            return

    async def stop(self, timeout: float = 5.0) -> None:
        self._stop_waiting()
        for task in list(self._background):
            task.cancel()
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


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class ThreadGroup:
    """One group of calls run by a model thread, its results handed to the event loop.

    The thread runs :meth:`run`; finished outcomes are posted to the loop in chunks
    (at least every ``RESULT_POST_INTERVAL``, and at the end), so a group costs one
    wake-up of the loop rather than one per call. A caller that gives up on the group
    (:meth:`abandon`) stops it before its next call.
    """

    def __init__(self, runner: "ThreadRunner", slot: int, method: str, payloads: Sequence[Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.futures: list[asyncio.Future[Outcome]] = [self.loop.create_future() for _ in payloads]
        self._runner = runner
        self._slot = slot
        self._method = method
        self._payloads = payloads
        self._finished: list[tuple[int, Outcome]] = []  # not yet posted (thread side)
        self._last_post = time.monotonic()
        self._lock = threading.Lock()
        self._started = 0
        self._abandoned = False

    # --- in the model's thread --------------------------------------------------------

    def run(self) -> None:
        error = None
        try:
            execute_group(self._runner.adapter, self._method, self._payloads, self._deliver, self._may_start)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            error = exc
        post(self.loop, self._finish, self._finished[:], error)

    def _may_start(self, index: int) -> bool:
        with self._lock:
            if self._abandoned:
                return False
            self._started = index + 1
            return True

    def _deliver(self, index: int, outcome: Outcome) -> None:
        self._finished.append((index, outcome))
        now = time.monotonic()
        if now - self._last_post >= RESULT_POST_INTERVAL and index < len(self.futures) - 1:
            chunk, self._finished = self._finished, []
            self._last_post = now
            post(self.loop, self._resolve, chunk)

    # --- in the event loop ----------------------------------------------------------

    def abandon(self) -> int:
        """Start no further call; how many calls started."""
        with self._lock:
            self._abandoned = True
            return self._started

    def _resolve(self, chunk: list[tuple[int, Outcome]]) -> None:
        for index, outcome in chunk:
            if not self.futures[index].done():
                self.futures[index].set_result(outcome)

    def _finish(self, chunk: list[tuple[int, Outcome]], error: BaseException | None) -> None:
        self._resolve(chunk)
        self._runner.group_done(self._slot)  # the slot is free only when the thread is
        for future in self.futures:  # calls not run (abandoned), or a bug of ours
            if not future.done():
                future.set_result(NOT_STARTED if error is None else failure_from_exception(error))


class ThreadRunner(Runner[int]):
    """The model instance lives in the server process; calls run on ``size`` threads.

    No process hop: fastest for models that are cheap or release the GIL. A thread
    that overruns the timeout cannot be stopped: the caller gets its 504, the calls
    queued behind it in its group run elsewhere, and the thread's slot stays taken
    until the late call returns. A crash of native code takes the server down with
    it, which is why process workers are the default.
    """

    kind = "thread"

    def __init__(self, name: str, adapter: ModelAdapter, size: int, warm: bool = True) -> None:
        super().__init__(name, size)
        self.adapter = adapter
        self._warm = warm
        self._threads: DaemonThreads | None = None
        self._groups: dict[int, ThreadGroup] = {}
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "workers": self.size if self._ready else 0,
            "workers_wanted": self.size,
            "busy": len(self._groups),
            "restarts": 0,
        }

    async def start(self) -> None:
        self._threads = DaemonThreads(self.size, f"deepaas-like-{self.name}")
        if self._warm:
            await self._run_warm()
        for slot in range(self.size):
            self.release(slot)
        self._ready = True

    async def _run_warm(self) -> None:
        """``warm()`` on one of the threads (none is busy), as a worker process runs it."""
        if not self.adapter.has("warm"):
            return
        assert self._threads is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()
        self._threads.submit(lambda: post(loop, _settle, done, execute(self.adapter, "warm", {})))
        outcome = await done
        if isinstance(outcome, CallFailure):
            raise WorkerStartFailed(outcome)

    def _launch(
        self, slot: int, method: str, payloads: Sequence[Any], together: bool, target: Any
    ) -> list[asyncio.Future[Outcome]]:
        assert self._threads is not None and target is None, "a started runner, and no shared workers here"
        group = ThreadGroup(self, slot, method, payloads)
        self._groups[slot] = group
        self._threads.submit(group.run)
        return group.futures

    def _abandon(self, slot: int, index: int, method: str) -> int:
        return self._groups[slot].abandon()

    def group_done(self, slot: int) -> None:
        self._groups.pop(slot, None)
        if self._ready:
            self.release(slot)

    async def reload(self) -> None:
        """Run ``warm()`` again on the shared instance, once every thread is idle.

        The slots are taken as they come free (calls queued meanwhile wait), so no call
        runs while the model reloads.
        """
        slots = []
        try:
            for _ in range(self.size):
                slots.append(await self.next_slot())
            await self._run_warm()
        finally:
            for slot in slots:
                self.release(slot)

    async def stop(self, timeout: float = 5.0) -> None:
        self._ready = False
        self._stop_waiting()
        if self._threads is not None:
            self._threads.stop()
