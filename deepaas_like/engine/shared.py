"""Shared workers: one pool hosting many models (the server's end).

Plugins keep dedicated workers; uploaded models share one pool of worker processes (or
of Ray actors, with ``--executor ray``; ``--registry-workers`` of them), each hosting up to
``--max-loaded-models`` of them, least recently used first out (the worker's end is the
registry's host plugin, :mod:`deepaas_like.registry.host`). A hundred uploaded models
therefore cost a couple of processes, not a hundred.

Each servable version sees the pool through a :class:`PoolView`, a runner of its own
for its dispatcher: calls go to a worker that already holds the model when one is free
(*affinity*), else to any free worker, which loads it.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
from typing import Any, Callable, Protocol, Sequence

from ..errors import ModelUnavailable
from ..loading import PluginRef
from .calls import Outcome, Unserved
from .process import WorkerLauncher, WorkerProcess, WorkerStartFailed
from .ray_runner import Actor, RayRunner
from .runners import ProcessRunner, Slot, WorkerSet
from .worker import WorkerConfig


class Target(Protocol):
    """One model a shared pool serves, as its hosts know it (picklable: it travels with
    each call; the registry's is :class:`deepaas_like.registry.host.Target`)."""

    @property
    def key(self) -> str:
        """Which loaded model a host keeps it as."""

    @property
    def model(self) -> str:
        """The model's name."""


LOG = logging.getLogger(__name__)
REPLACEMENT_WAIT = 60.0  # seconds a version's start waits for a shared worker being replaced
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class LoadStats:
    """Loads, evictions and load times of uploaded models (read by /metrics)."""

    def __init__(self) -> None:
        self.loads = 0
        self.evictions = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LOAD_BUCKETS) + 1)

    def loaded(self, seconds: float, evicted: int) -> None:
        self.loads += 1
        self.evictions += evicted
        self.seconds += seconds
        self.buckets[bisect.bisect_left(LOAD_BUCKETS, seconds)] += 1


class Hosting(WorkerSet[Slot]):
    """What a pool of shared hosts knows besides its slots: which uploaded models each
    slot holds (from the hosts' "loaded" events), and the load statistics. Mixed into a
    runner, before it: :class:`SharedPool` (worker processes) or :class:`RaySharedPool`
    (Ray actors). A worker set itself, so that its ``super()`` calls reach that runner."""

    kind = "shared"
    affine = True

    def _init_hosting(self, capacity: int) -> None:
        # Which models each host holds, as the server knows it: the targets it sent there, least
        # recently used first out at the hosts' capacity, as they do. (Not from the hosts' own
        # word: one running its uploader's code could claim other models to draw their calls.)
        self._holding: dict[Slot, collections.OrderedDict[str, None]] = collections.defaultdict(collections.OrderedDict)
        self._capacity = capacity
        self.stats = LoadStats()
        self.started = asyncio.Event()

    async def run_group(
        self,
        slot: Slot,
        method: str,
        payloads: Sequence[Any],
        timeout: float | None,
        together: bool = False,
        target: Any = None,
    ) -> list[Outcome]:
        if target is not None:
            if target.contained_only and not contained(slot):
                self.release(slot)
                refused = Unserved(
                    ModelUnavailable(
                        f"Model '{target.model}' runs code when it loads and this worker is not contained; "
                        "retry shortly",
                        model=target.model,
                    )
                )
                return [refused] * len(payloads)
            held = self._holding[slot]
            held[target.key] = None
            held.move_to_end(target.key)
            while len(held) > self._capacity:
                held.popitem(last=False)
        return await super().run_group(slot, method, payloads, timeout, together, target)

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            self.started.set()
        LOG.info("registry: workers of uploaded models: %s", self.containment_summary())

    @property
    def contains_code(self) -> bool:
        """Whether the hosts are contained (see :mod:`deepaas_like.containment.sandbox`): formats whose
        loading runs code may be loaded there."""
        return False

    def containment_summary(self) -> str:
        return "not contained"

    def _holds(self, slot: Slot, key: Any) -> bool:
        return key in self._holding.get(slot, ())

    def loaded_keys(self) -> set[str]:
        return {key for keys in self._holding.values() for key in keys}

    def _on_event(self, slot: Slot, name: str, data: Any) -> None:
        if name == "loaded":  # for the load statistics only; checked, never printed
            seconds, evicted = data.get("seconds"), data.get("evicted")
            if type(seconds) not in (int, float) or type(evicted) is not list:
                raise ValueError("a malformed 'loaded' event")
            self.stats.loaded(min(max(0.0, float(seconds)), 1e6), min(len(evicted), self._capacity))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loaded_models": len(self.loaded_keys())}

    def view(self, target: Target) -> "PoolView":
        return PoolView(self, target)


class SharedPool(Hosting[WorkerProcess], ProcessRunner):
    """The registry's worker processes, shared by every uploaded model."""

    def __init__(self, launcher: WorkerLauncher, size: int, capacity: int) -> None:
        ProcessRunner.__init__(self, "registry", launcher, size)
        self._init_hosting(capacity)
        self._containment: dict[str, Any] | None = None

    def _on_event(self, slot: WorkerProcess, name: str, data: Any) -> None:
        if name == "recycle":  # the worker ends by itself: it is replaced, quietly
            reason = data.get("reason")
            slot.recycled = reason[:200] if type(reason) is str else "a failed load"
            return
        super()._on_event(slot, name, data)

    def _on_exit(self, worker: WorkerProcess) -> None:
        self._holding.pop(worker, None)
        super()._on_exit(worker)

    def _on_ready(self, worker: WorkerProcess) -> None:
        # Every worker of the pool is contained alike (one kernel, one config): the latest
        # report stands for all, also while one is being replaced.
        if worker.containment is not None:
            self._containment = worker.containment

    @property
    def contains_code(self) -> bool:
        return bool(self._containment and self._containment.get("contained"))

    def containment_summary(self) -> str:
        report = self._containment
        if report is None:
            return "not contained (no worker started)"
        text = "; ".join(report.get("layers") or []) or "nothing applied"
        missing = report.get("missing") or []
        return (
            ("contained: " if report.get("contained") else "NOT contained: ")
            + text
            + (f" (not available: {'; '.join(missing)})" if missing else "")
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "contained": self.contains_code}


class RaySharedPool(Hosting[Actor], RayRunner):
    """The registry's hosts as Ray actors (``--executor ray``): uploaded models multiplexed
    across them, each keeping its most recently used models loaded, as worker processes do."""

    def __init__(self, ref: PluginRef, config: WorkerConfig, size: int, capacity: int, **ray_options: Any) -> None:
        RayRunner.__init__(self, "registry", ref, config, size, **ray_options)
        self._init_hosting(capacity)

    def _lost(self, actor: Actor) -> None:
        self._holding.pop(actor, None)
        super()._lost(actor)


def contained(slot: object) -> bool:
    """Whether a host reported a containment with every essential layer (Ray actors: never)."""
    report = getattr(slot, "containment", None)
    return isinstance(report, dict) and report.get("contained") is True


class PoolView:
    """One uploaded version's runner: the shared pool, with its target and affinity key."""

    kind = "shared"

    def __init__(self, pool: Hosting[Any], target: Target) -> None:
        self.pool = pool
        self.target = target
        self.name = target.model

    @property
    def size(self) -> int:
        return self.pool.size

    @property
    def idle(self) -> int:
        return self.pool.idle

    @property
    def restarts(self) -> int:
        return self.pool.restarts

    @property
    def ready(self) -> bool:
        return self.pool.ready

    def take_idle(self) -> Any:
        return self.pool.take_idle(self.target.key)

    async def next_slot(self) -> Any:
        return await self.pool.next_slot(self.target.key)

    def release(self, worker: Any) -> None:
        self.pool.release(worker)

    async def run_group(
        self,
        worker: Any,
        method: str,
        payloads: Sequence[Any],
        timeout: float | None,
        together: bool = False,
        target: Any = None,
    ) -> list[Outcome]:
        return await self.pool.run_group(worker, method, payloads, timeout, together, self.target)

    async def start(self) -> None:
        """Wait for the shared workers (a replacement too, while one is starting); fails like a
        plugin's start when none could start."""
        await self.pool.started.wait()
        deadline = asyncio.get_running_loop().time() + REPLACEMENT_WAIT
        while not self.pool.ready and self.pool.replacing and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if not self.pool.ready:
            raise WorkerStartFailed(None)

    async def reload(self) -> None:
        """Nothing to reload: a new version is a new view."""

    def new_training(
        self, *, log_file: str | None = None, on_progress: Callable[[float, str | None], None] | None = None
    ) -> None:
        """Uploaded versions do not train."""
        return None

    async def stop(self, timeout: float = 5.0) -> None:
        """The pool outlives its views; the registry stops it."""

    def describe(self) -> dict[str, Any]:
        return {**self.pool.describe(), "loaded": self.target.key in self.pool.loaded_keys()}
