"""Where a model's code runs: the slots every executor hands out (:class:`Runner`), the
workers that live apart from the server (:class:`WorkerSet`), and worker processes
(:class:`ProcessRunner`); threads of the server are in :mod:`.threads`, Ray actors in
:mod:`.ray_runner`.

Every runner hands out *slots* (a worker process, or a thread's turn) to the model's
dispatcher (:mod:`deepaas_like.engine.dispatch`), which owns the one queue of calls. A group
of calls runs on a slot with an optional timeout per call and ends with one
:data:`~deepaas_like.engine.calls.Outcome` per call. The event loop only awaits them and never
runs model code itself.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Any, Callable, Coroutine, Generic, Sequence, TypeVar

from ..errors import ModelUnavailable, PredictTimeout
from .calls import NOT_STARTED, Outcome, Unserved
from .process import WorkerLauncher, WorkerProcess, WorkerStartFailed

LOG = logging.getLogger(__name__)
RESPAWN_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
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
            index = next(
                (
                    i
                    for i, (future, key) in enumerate(waiters)
                    if not future.done() and key is not None and self._holds(slot, key)
                ),
                0,
            )
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
        ``target``: which of the models a shared worker hosts (see :mod:`deepaas_like.engine.worker`).
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

    def new_training(
        self, *, log_file: str | None = None, on_progress: Callable[[float, str | None], None] | None = None
    ) -> Any:
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


class WorkerSet(Runner[Slot]):
    """``size`` workers of the model that live apart from the server (processes, Ray actors),
    started, replaced (with back-off) and reloaded alike; subclasses say how one starts
    (:meth:`_open`) and is let go (:meth:`_close`)."""

    noun = "worker"  # in the log

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)
        self._current: set[Slot] = set()  # the generation that takes calls
        self._background: set[asyncio.Task[None]] = set()

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    async def _open(self) -> Slot:
        """Start one worker, warm; :class:`WorkerStartFailed` when it cannot."""
        raise NotImplementedError

    async def _close(self, slot: Slot) -> None:
        """End a worker that started (a set that failed, a replacement that came too late)."""
        raise NotImplementedError

    def _on_ready(self, slot: Slot) -> None:
        """A started worker begins to take calls."""

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _start_set(self) -> list[Slot]:
        results = await asyncio.gather(*(self._open() for _ in range(self.size)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(
                *(self._close(r) for r in results if not isinstance(r, BaseException)), return_exceptions=True
            )
            raise failures[0]
        return [r for r in results if not isinstance(r, BaseException)]

    def _admit(self, slot: Slot) -> None:
        self._current.add(slot)
        self._on_ready(slot)
        self.release(slot)

    async def start(self) -> None:
        for slot in await self._start_set():
            self._admit(slot)
        LOG.info("model %s: %d %s(s) ready: %s", self.name, self.size, self.noun, self.worker_pids())

    async def reload(self) -> None:
        """Start a fresh, warm set of workers, then route every new call to them (busy old
        ones are let go when their call ends: release -> _discard)."""
        fresh = await self._start_set()
        old_idle = list(self._idle)
        self._idle.clear()
        self._current = set()
        for slot in fresh:
            self._admit(slot)
        for slot in old_idle:
            self._discard(slot)
        LOG.info("model %s: %ss reloaded: %s", self.name, self.noun, self.worker_pids())

    def _replace_lost(self) -> None:
        """A worker of the current generation was lost: count it, start another."""
        self.restarts += 1
        self._in_background(self._replacement())

    async def _replace(self) -> None:
        for attempt in itertools.count():
            if self._stopping:
                return
            try:
                slot = await self._open()
            except WorkerStartFailed as exc:
                delay = RESPAWN_BACKOFF[min(attempt, len(RESPAWN_BACKOFF) - 1)]
                LOG.error(
                    "model %s: replacement %s failed to start: %s; retrying in %ss", self.name, self.noun, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                await self._close(slot)
                return
            self._admit(slot)
            LOG.info("model %s: replacement %s ready: %s", self.name, self.noun, self.worker_pids())
            return


class ProcessRunner(WorkerSet[WorkerProcess]):
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
        self._alive: set[WorkerProcess] = set()  # every process not yet reaped

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

    async def _open(self) -> WorkerProcess:
        worker = self._launcher.worker(on_exit=self._on_exit, on_event=self._on_event)
        self._alive.add(worker)
        try:
            await worker.start()
        except BaseException:
            await worker.stop(0)
            raise
        return worker

    async def _close(self, worker: WorkerProcess) -> None:
        await worker.stop(0)

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

    def _on_exit(self, worker: WorkerProcess) -> None:
        self._alive.discard(worker)
        if worker not in self._current:
            return
        self._current.discard(worker)
        if self._stopping:
            return
        if worker.recycled:
            LOG.info("model %s: worker %s ended after %s; starting a fresh one", self.name, worker.pid, worker.recycled)
        else:
            LOG.error(
                "model %s: worker %s ended (exit code %s); starting a replacement",
                self.name,
                worker.pid,
                worker.exitcode,
            )
        self._replace_lost()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stop_waiting()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(w.stop(timeout) for w in list(self._alive)), return_exceptions=True)
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
