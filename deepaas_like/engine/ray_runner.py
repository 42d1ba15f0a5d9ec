"""``--executor ray``: a model's workers are Ray actors on a Ray cluster.

aiohttp stays the front door (validation, auth, the DEEPaaS and OIP routes, batching,
queue and timeouts: the :class:`~deepaas_like.engine.dispatch.Dispatcher` sees a runner like
any other); each slot is one actor that imports the plugin and runs ``warm()`` once,
with the resources the model's options ask for (``--ray-num-cpus``, ``--ray-num-gpus``;
``--workers`` actors). A call travels as a Ray task on the actor; its outcome comes back
as the same :mod:`~deepaas_like.engine.calls` types the worker processes send.

An actor that dies (its process crashed, its node went away) fails the call it ran
with a 503 and is replaced in the background; one that overruns ``--predict-timeout``
is killed (504) and replaced. The cluster is the one at ``--ray-address``, or a local
head started with the server (on 127.0.0.1) when that is empty; a local head's workers
see the server's ``sys.path``.

A training is a Ray task of its own (:class:`RayTrainingRun`), with the model's
resources, in a worker process that serves only it: what it prints and logs, and its
``report_progress()``, come back through a Ray queue into the job's log and document;
cancelling it cancels the task (its process is killed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .. import runtime
from ..loading import PluginRef
from ..runtime import STORAGE_ENV
from .adapter import ModelAdapter, execute, execute_group
from .calls import NOT_STARTED, Outcome, Unserved, failure_from_exception
from .process import WorkerLost, WorkerStartFailed
from .ray_head import ensure_ray, release_ray, runtime_env
from .runners import WorkerSet
from .training import TrainingStartFailed
from .worker import WorkerConfig, line_buffered, run_on_target

LOG = logging.getLogger(__name__)


class ModelActor:
    """The body of one Ray actor: a warm instance of the plugin (see :func:`_actor_class`)."""

    def __init__(self, ref: PluginRef, config: WorkerConfig) -> None:
        if config.storage_dir:
            os.environ[STORAGE_ENV] = config.storage_dir
        os.environ.update(dict(config.environ))
        self.adapter = ModelAdapter(config.model, ref.load_object(), config.storage_dir)
        if config.warm:
            self.adapter.warm()

    def pid(self) -> int:
        return os.getpid()

    def group(
        self, method: str, payloads: list[Any], target: Any = None
    ) -> tuple[list[Outcome], list[tuple[str, Any]]]:
        """Run a group as a worker process does (``target``: which model a shared host
        serves); the outcomes, and the events the plugin reported meanwhile."""
        outcomes: list[Outcome] = [NOT_STARTED] * len(payloads)
        events: list[tuple[str, Any]] = []

        def deliver(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome

        runtime.event_sink = lambda name, data: events.append((name, data))
        try:
            if target is None:
                execute_group(self.adapter, method, payloads, deliver)
            else:
                run_on_target(self.adapter, target, method, payloads, deliver)
        finally:
            runtime.event_sink = None
        return outcomes, events


_ACTOR_CLASS: Any = None


def _actor_class(ray: Any) -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(max_restarts=0, max_task_retries=0)(ModelActor)
    return _ACTOR_CLASS


@dataclass(eq=False)
class Actor:
    """One slot: an actor handle, the process it runs in, and whether it may take calls."""

    handle: Any
    pid: int | None = None
    busy: bool = False
    dead: bool = False


class RayRunner(WorkerSet[Actor]):
    """``size`` Ray actors, each owning a warm instance of the model."""

    kind = "ray"
    noun = "ray actor"

    def __init__(
        self,
        name: str,
        ref: PluginRef,
        config: WorkerConfig,
        size: int,
        *,
        address: str = "",
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
    ) -> None:
        super().__init__(name, size)
        self._ref = ref
        self._config = config
        self._address = address
        self._resources = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        self._ray: Any = None

    @property
    def ready(self) -> bool:
        return any(not a.dead for a in self._current)

    def describe(self) -> dict[str, Any]:
        return {
            "executor": "ray",  # also for the registry's shared pool of actors
            "workers": len([a for a in self._current if not a.dead]),
            "workers_wanted": self.size,
            "busy": sum(1 for a in self._current if a.busy),
            "restarts": self.restarts,
            "resources": dict(self._resources),
        }

    def worker_pids(self) -> list[int]:
        return sorted(a.pid for a in self._current if a.pid is not None and not a.dead)

    def _usable(self, actor: Actor) -> bool:
        return not actor.dead and actor in self._current

    def _discard(self, actor: Actor) -> None:
        self._kill(actor)

    # --- actors ---------------------------------------------------------------------------

    async def _open(self) -> Actor:
        ray = self._ray
        handle = (
            _actor_class(ray)
            .options(**self._resources, runtime_env=runtime_env(self._address))
            .remote(self._ref, self._config)
        )
        actor = Actor(handle)
        try:
            actor.pid = await handle.pid.remote()
        except ray.exceptions.RayActorError as exc:
            self._kill(actor)
            cause = getattr(exc, "cause", None) or exc
            raise WorkerStartFailed(failure_from_exception(cause)) from None
        except Exception as exc:
            self._kill(actor)
            raise WorkerStartFailed(failure_from_exception(exc)) from None
        except BaseException:
            self._kill(actor)
            raise
        return actor

    async def _close(self, actor: Actor) -> None:
        self._kill(actor)

    def _kill(self, actor: Actor) -> None:
        if not actor.dead:
            actor.dead = True
            try:
                self._ray.kill(actor.handle, no_restart=True)
            except Exception:  # already gone
                pass

    async def start(self) -> None:
        try:
            self._ray = await asyncio.to_thread(ensure_ray, self._address)
        except WorkerStartFailed:
            raise
        except Exception as exc:
            raise WorkerStartFailed(failure_from_exception(exc)) from None
        self._check_fits()
        await super().start()

    def new_training(
        self, *, log_file: str | None = None, on_progress: Callable[[float, str | None], None] | None = None
    ) -> RayTrainingRun:
        """A training of this model as a Ray task with the model's resources."""
        return RayTrainingRun(
            self._ref,
            self._config,
            address=self._address,
            resources=self._resources,
            log_file=log_file,
            on_progress=on_progress,
        )

    def _check_fits(self) -> None:
        """Refuse at once what the cluster could never place (else the actors wait for it forever)."""
        total = self._ray.cluster_resources()
        wanted = {"CPU": self._resources["num_cpus"] * self.size, "GPU": self._resources["num_gpus"] * self.size}
        short = {k: v for k, v in wanted.items() if v > total.get(k, 0.0) + 1e-9}
        if short:
            text = ", ".join(f"{v:g} {k} ({self.size} actors × {v / self.size:g})" for k, v in short.items())
            have = ", ".join(f"{total.get(k, 0.0):g} {k}" for k in short)
            raise WorkerStartFailed(
                failure_from_exception(
                    RuntimeError(
                        f"the Ray cluster has {have} in all; model {self.name} asks for {text}: lower --workers, "
                        f"--ray-num-cpus or --ray-num-gpus for it, or add nodes"
                    )
                )
            )

    async def stop(self, timeout: float = 5.0) -> None:
        self._stop_waiting()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for actor in list(self._current):
            self._kill(actor)
        self._current.clear()
        if self._ray is not None:
            self._ray = None
            await asyncio.to_thread(release_ray)

    # --- calls ----------------------------------------------------------------------------

    def _launch(
        self, actor: Actor, method: str, payloads: Sequence[Any], together: bool, target: Any
    ) -> list[asyncio.Future[Outcome]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in payloads]
        actor.busy = True
        self._in_background(self._run(actor, method, list(payloads), futures, together, target))
        return futures

    async def _run(
        self,
        actor: Actor,
        method: str,
        payloads: list[Any],
        futures: list[asyncio.Future[Outcome]],
        together: bool,
        target: Any,
    ) -> None:
        ray = self._ray
        try:
            outcomes, events = await actor.handle.group.remote(method, payloads, target)
            for name, data in events:
                self._on_event(actor, name, data)
        except ray.exceptions.RayActorError:  # the first call was running; a batch ran as one
            lost = Unserved(WorkerLost(self.name, method, None))
            outcomes = [lost] * len(payloads) if together else [lost] + [NOT_STARTED] * (len(payloads) - 1)
            self._lost(actor)
        except ray.exceptions.RayError as exc:  # a task that could not run or return
            outcomes = [failure_from_exception(exc)] * len(payloads)
        except asyncio.CancelledError:
            outcomes = [NOT_STARTED] * len(payloads)
        for future, outcome in zip(futures, outcomes):
            if not future.done():
                future.set_result(outcome)
        actor.busy = False
        self.release(actor)

    def _on_event(self, actor: Actor, name: str, data: Any) -> None:
        """An event the actor's plugin reported during a call (see the registry's shared pool)."""

    def _abandon(self, actor: Actor, index: int, method: str) -> int:
        LOG.warning("model %s: %s() overran its timeout; replacing ray actor %s", self.name, method, actor.pid)
        self._lost(actor)
        return index + 1

    def _lost(self, actor: Actor) -> None:
        """An actor that died or was given up on: kill it, start a replacement."""
        if actor not in self._current:
            self._kill(actor)
            return
        self._current.discard(actor)
        self._kill(actor)
        if self._stopping:
            return
        LOG.error("model %s: ray actor %s lost; starting a replacement", self.name, actor.pid)
        self._replace_lost()


# --- trainings as Ray tasks ---------------------------------------------------------------

PUMP_INTERVAL = 0.2


def _train_task(ref: PluginRef, config: WorkerConfig, kwargs: dict[str, Any], queue: Any) -> Outcome:
    """The body of a training's Ray task, in a worker process that serves only it (``max_calls=1``):
    its stdout and stderr (native writes too) go to a file whose new bytes, and each
    ``report_progress()``, are put on ``queue`` for the server."""
    import logging as task_logging

    fd, path = tempfile.mkstemp(prefix="deepaas-like-train-", suffix=".log")
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    line_buffered()
    task_logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        force=True,
        format=f"%(asctime)s %(levelname)s [{config.model} training] %(name)s: %(message)s",
    )
    done = threading.Event()

    def ship() -> None:
        with open(path, "rb") as log:
            while True:
                finished = done.wait(PUMP_INTERVAL)
                data = log.read()
                if data:
                    queue.put(("log", data))
                if finished:
                    return

    shipper = threading.Thread(target=ship, daemon=True)
    shipper.start()
    runtime.progress_sink = lambda fraction, message: queue.put(("progress", fraction, message))
    try:
        if config.storage_dir:
            os.environ[STORAGE_ENV] = config.storage_dir
        try:
            adapter = ModelAdapter(config.model, ref.load_object(), config.storage_dir)
            if config.warm:
                adapter.warm()
        except BaseException as exc:  # noqa: BLE001 - reported as the outcome
            return Unserved(
                TrainingStartFailed(f"the training task could not load the model: {failure_from_exception(exc).text}")
            )
        return execute(adapter, "train", kwargs)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        done.set()
        shipper.join(timeout=10)
        os.unlink(path)


class RayTrainingRun:
    """One training of one model as a Ray task (the same surface as
    :class:`~deepaas_like.engine.training.TrainingRun`)."""

    def __init__(
        self,
        ref: PluginRef,
        config: WorkerConfig,
        *,
        address: str,
        resources: dict[str, float],
        log_file: str | None = None,
        on_progress: Callable[[float, str | None], None] | None = None,
    ) -> None:
        self._ref, self._config, self._address, self._resources = ref, config, address, resources
        self._log_file, self._on_progress = log_file, on_progress
        self._task: Any = None
        self._ray: Any = None
        self.killed = False

    async def run(self, kwargs: Mapping[str, Any]) -> Outcome:
        ray = self._ray = await asyncio.to_thread(ensure_ray, self._address)
        try:
            return await self._run(ray, kwargs)
        finally:
            await asyncio.to_thread(release_ray)

    async def _run(self, ray: Any, kwargs: Mapping[str, Any]) -> Outcome:
        from ray.util.queue import Queue

        queue = await asyncio.to_thread(Queue, actor_options={"num_cpus": 0})
        remote = ray.remote(max_calls=1, max_retries=0)(_train_task)
        self._task = remote.options(**self._resources, runtime_env=runtime_env(self._address)).remote(
            self._ref, self._config, dict(kwargs), queue
        )
        if self.killed:
            ray.cancel(self._task, force=True)
        pump = asyncio.get_running_loop().create_task(self._pump(queue))
        try:
            outcome: Outcome = await self._task  # what _train_task returns
            return outcome
        except ray.exceptions.RayError:  # cancelled, or its process or node died under it
            return Unserved(WorkerLost(self._config.model, "train", None))
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            await self._take(queue)
            try:
                queue.shutdown(force=True)
            except Exception:  # already gone
                pass

    async def _pump(self, queue: Any) -> None:
        while True:
            await asyncio.sleep(PUMP_INTERVAL)
            await self._take(queue)

    async def _take(self, queue: Any) -> None:
        """What the task has put on the queue so far: log bytes to the log file (in a thread),
        the last progress to the job (here, on the event loop)."""
        progress = await asyncio.to_thread(self._drain, queue)
        if progress is not None and self._on_progress is not None:
            self._on_progress(*progress)

    def _drain(self, queue: Any) -> tuple[float, str | None] | None:
        try:
            items = queue.get_nowait_batch(queue.qsize())
        except Exception:  # the queue's actor is gone: nothing more will come
            return None
        progress = None
        with open(self._log_file or os.devnull, "ab") as log:
            for item in items:
                if item[0] == "log":
                    log.write(item[1])
                else:
                    progress = (item[1], item[2])
        return progress

    def kill(self) -> None:
        """Cancel the training: its task's process is killed."""
        self.killed = True
        if self._task is not None and self._ray is not None:
            self._ray.cancel(self._task, force=True)
