"""Where a model's code runs: a pool of worker processes, or threads of the server.

Both runners offer the same interface (:class:`Runner`); the event loop only awaits
them and never runs model code itself.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import multiprocessing
from typing import Any, Mapping, Protocol

from .adapter import ModelAdapter, failure_from_exception, raise_failure
from .errors import ModelUnavailable
from .loading import PluginRef
from .process import WorkerDied, WorkerProcess, WorkerStartFailed
from .worker import WorkerConfig

LOG = logging.getLogger(__name__)
RESPAWN_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Runner(Protocol):
    kind: str
    restarts: int

    async def start(self) -> None: ...

    async def call(self, method: str, kwargs: Mapping[str, Any]) -> Any: ...

    async def reload(self) -> None: ...

    async def stop(self, timeout: float = 5.0) -> None: ...

    @property
    def ready(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...


def mp_context(start_method: str) -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(["deepaas_like.worker"])
    return context


class ProcessRunner:
    """``size`` worker processes, each owning a warm instance of the model.

    A call goes to an idle worker (or waits for one). A worker that dies fails only
    the call it was running, with a 503, and is replaced and re-warmed in the
    background. :meth:`reload` swaps in a fresh set of warm workers at once.
    """

    kind = "process"

    def __init__(
        self,
        name: str,
        ref: PluginRef,
        config: WorkerConfig,
        size: int,
        context: multiprocessing.context.BaseContext,
    ) -> None:
        self.name = name
        self._ref = ref
        self._config = config
        self._size = size
        self._context = context
        self._current: set[WorkerProcess] = set()  # the generation that takes calls
        self._alive: set[WorkerProcess] = set()  # every process not yet reaped
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._respawns: set[asyncio.Task] = set()
        self._stopping = False
        self.restarts = 0

    @property
    def ready(self) -> bool:
        return any(not w.dead for w in self._current)

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def worker_pids(self) -> list[int]:
        return sorted(w.pid for w in self._current if w.pid is not None and not w.dead)

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "workers": len([w for w in self._current if not w.dead]),
            "workers_wanted": self._size,
            "busy": sum(1 for w in self._current if w.busy),
            "waiting": self.waiting,
            "restarts": self.restarts,
        }

    def _new_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self._ref, self._config, self._context, on_exit=self._on_exit)
        self._alive.add(worker)
        return worker

    async def _start_set(self) -> list[WorkerProcess]:
        workers = [self._new_worker() for _ in range(self._size)]
        results = await asyncio.gather(*(w.start() for w in workers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(w.stop(0) for w in workers), return_exceptions=True)
            raise failures[0]
        return workers

    async def start(self) -> None:
        for worker in await self._start_set():
            self._current.add(worker)
            self._release(worker)
        LOG.info("model %s: %d worker process(es) ready: %s", self.name, self._size, self.worker_pids())

    async def reload(self) -> None:
        """Start a fresh, warm set of workers, then route every new call to them."""
        fresh = await self._start_set()
        old_idle = list(self._idle)
        self._idle.clear()
        self._current = set(fresh)
        for worker in fresh:
            self._release(worker)
        for worker in old_idle:
            self._retire(worker)
        LOG.info("model %s: workers reloaded: %s", self.name, self.worker_pids())

    async def call(self, method: str, kwargs: Mapping[str, Any]) -> Any:
        worker = await self._acquire()
        try:
            kind, value = await worker.call(method, kwargs)
        except WorkerDied as exc:
            raise ModelUnavailable(
                f"The worker of model '{self.name}' died while running {method}() "
                f"(exit code {exc.exitcode}); a replacement is starting, retry shortly",
                model=self.name,
            ) from None
        finally:
            self._release(worker)
        if kind == "err":
            raise_failure(self.name, method, value)
        return value

    async def _acquire(self) -> WorkerProcess:
        if self._stopping:
            raise ModelUnavailable(f"Model '{self.name}' is stopping", model=self.name)
        while self._idle:
            worker = self._idle.popleft()
            if not worker.dead and worker in self._current:
                return worker
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())
            raise

    def _release(self, worker: WorkerProcess) -> None:
        if worker.dead:
            return
        if worker not in self._current or self._stopping:
            self._retire(worker)
            return
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(worker)
                return
        self._idle.append(worker)

    def _retire(self, worker: WorkerProcess) -> None:
        task = asyncio.get_running_loop().create_task(worker.stop())
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    def _on_exit(self, worker: WorkerProcess) -> None:
        self._alive.discard(worker)
        if worker not in self._current:
            return
        self._current.discard(worker)
        if self._stopping:
            return
        self.restarts += 1
        LOG.error(
            "model %s: worker %s died (exit code %s); starting a replacement",
            self.name, worker.pid, worker.exitcode,
        )
        task = asyncio.get_running_loop().create_task(self._replace())
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

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
            self._release(worker)
            LOG.info("model %s: replacement worker %s ready", self.name, worker.pid)
            return

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for task in list(self._respawns):
            task.cancel()
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(ModelUnavailable(f"Model '{self.name}' is stopping", model=self.name))
        self._idle.clear()
        await asyncio.gather(*(w.stop(timeout) for w in list(self._alive)), return_exceptions=True)
        if self._respawns:
            await asyncio.gather(*list(self._respawns), return_exceptions=True)


class ThreadRunner:
    """The model instance lives in the server process; calls run on ``size`` threads.

    No process hop: fastest for models that are cheap or release the GIL. A crash of
    the model's native code takes the server down with it, which is why process
    workers are the default.
    """

    kind = "thread"

    def __init__(self, name: str, adapter: ModelAdapter, size: int, warm: bool = True) -> None:
        self.name = name
        self._adapter = adapter
        self._size = size
        self._warm = warm
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix=f"deepaas-like-{name}"
        )
        self._ready = False
        self.restarts = 0
        self._busy = 0

    @property
    def ready(self) -> bool:
        return self._ready

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "workers": self._size if self._ready else 0,
            "workers_wanted": self._size,
            "busy": min(self._busy, self._size),
            "waiting": max(0, self._busy - self._size),
            "restarts": 0,
        }

    async def _run(self, method: str, kwargs: Mapping[str, Any] | None) -> Any:
        loop = asyncio.get_running_loop()
        self._busy += 1
        try:
            return await loop.run_in_executor(self._pool, self._adapter.call, method, kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a plugin may raise anything, SystemExit included
            raise_failure(self.name, method, failure_from_exception(exc))
        finally:
            self._busy -= 1

    async def start(self) -> None:
        if self._warm:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._pool, self._adapter.warm)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # as in a worker process: report, do not crash
                raise WorkerStartFailed(failure_from_exception(exc)) from None
        self._ready = True

    async def call(self, method: str, kwargs: Mapping[str, Any]) -> Any:
        return await self._run(method, kwargs)

    async def reload(self) -> None:
        if self._adapter.has("warm"):
            await self._run("warm", None)

    async def stop(self, timeout: float = 5.0) -> None:
        self._ready = False
        self._pool.shutdown(wait=False, cancel_futures=True)
