"""``--executor thread``: a model's calls run on threads of the server (its own process).

For plugins that release the GIL or hold state a process cannot share; the event loop
still never runs model code itself: a group runs on a daemon thread and hands its
results back in batches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable, Sequence

from .adapter import ModelAdapter, execute, execute_group
from .calls import NOT_STARTED, CallFailure, Outcome, failure_from_exception
from .process import WorkerStartFailed
from .runners import Runner

LOG = logging.getLogger(__name__)
RESULT_POST_INTERVAL = 0.001  # a thread hands finished results to the event loop at least this often


class DaemonThreads:
    """``count`` daemon threads running submitted callables, first come first served.

    Daemon threads, unlike a ThreadPoolExecutor's, do not hold up the interpreter's
    exit: a model call that never returns cannot keep the server from stopping.
    """

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
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
