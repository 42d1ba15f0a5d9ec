"""The executor contract, and the one place that picks an executor.

An executor owns the workers that run a model's code: it hands out slots (a worker that
may take a group of calls now), runs groups on them, replaces workers that die, reloads
them after a training and stops them. The dispatcher (:mod:`.dispatch`) is its only
caller for calls; the process (:class:`.runners.ProcessRunner`), thread
(:class:`.runners.ThreadRunner`) and Ray (:class:`.ray_runner.RayRunner`) executors and
the shared pools of :mod:`.shared` fulfil it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from ..loading import PluginRef
from .adapter import ModelAdapter
from .calls import Outcome
from .process import WorkerLauncher, mp_context
from .runners import ProcessRunner, Runner
from .shared import RaySharedPool, SharedPool
from .threads import ThreadRunner
from .worker import WorkerConfig

KINDS = ("process", "thread", "ray")


class Executor(Protocol):
    """What the dispatcher, the jobs and the registry ask of a model's workers."""

    name: str
    kind: str

    @property
    def size(self) -> int: ...

    @property
    def restarts(self) -> int: ...

    @property
    def idle(self) -> int: ...

    @property
    def ready(self) -> bool: ...

    def take_idle(self) -> Any: ...

    async def next_slot(self) -> Any: ...

    def release(self, slot: Any) -> None: ...

    async def run_group(
        self,
        slot: Any,
        method: str,
        payloads: Sequence[Any],
        timeout: float | None,
        together: bool = False,
        target: Any = None,
    ) -> list[Outcome]: ...

    async def start(self) -> None: ...

    async def reload(self) -> None: ...

    async def stop(self, timeout: float = 5.0) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def new_training(
        self, *, log_file: str | None = None, on_progress: Callable[[float, str | None], None] | None = None
    ) -> Any:
        """A training run where the workers live (a Ray task), or None: a process of the server's own."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Which executor, how many workers, and what each kind needs besides."""

    kind: str = "process"  # one of KINDS
    workers: int = 1
    start_method: str = "forkserver"  # process: how worker processes start
    poll_us: int = 0  # process: a serving worker's longest poll for its next call
    ray_address: str = ""  # ray: the cluster ("" starts a local head)
    ray_num_cpus: float = 1.0
    ray_num_gpus: float = 0.0

    @classmethod
    def of(cls, server: Any, model: Any) -> ExecutorSpec:
        """The executor a model gets: ``model`` says which and how big (``executor``,
        ``workers``, ``ray_num_cpus``, ``ray_num_gpus``: a model's settings), ``server`` the
        rest (``start_method``, ``worker_poll_us``, ``ray_address``: the settings or their
        engine section)."""
        return cls(
            kind=model.executor,
            workers=model.workers,
            start_method=server.start_method,
            poll_us=server.worker_poll_us,
            ray_address=server.ray_address,
            ray_num_cpus=model.ray_num_cpus,
            ray_num_gpus=model.ray_num_gpus,
        )

    def ray_options(self) -> dict[str, Any]:
        return {"address": self.ray_address, "num_cpus": self.ray_num_cpus, "num_gpus": self.ray_num_gpus}


def make_executor(
    name: str, ref: PluginRef, config: WorkerConfig, spec: ExecutorSpec, *, adapter: ModelAdapter | None = None
) -> Runner[Any]:
    """The executor of model ``name``: the plugin ``ref`` with its worker ``config``
    (``adapter``: the model in this process, which the thread executor runs)."""
    if spec.kind not in KINDS:
        raise ValueError(f"executor must be one of {', '.join(KINDS)}, not {spec.kind!r}")
    if spec.kind == "ray":
        from .ray_runner import RayRunner  # Ray is an extra

        return RayRunner(name, ref, config, spec.workers, **spec.ray_options())
    if spec.kind == "thread":
        if adapter is None:
            raise ValueError("the thread executor runs the model in this process: it needs its adapter")
        return ThreadRunner(name, adapter, spec.workers, warm=config.warm)
    return ProcessRunner(name, _launcher(ref, config, spec), spec.workers)


def make_shared_pool(
    ref: PluginRef, config: WorkerConfig, spec: ExecutorSpec, capacity: int
) -> SharedPool | RaySharedPool:
    """A pool of ``spec.workers`` hosts (the plugin ``ref``) each keeping up to ``capacity``
    models loaded: Ray actors with the ray executor, else worker processes."""
    if spec.kind == "ray":
        return RaySharedPool(ref, config, spec.workers, capacity, **spec.ray_options())
    return SharedPool(_launcher(ref, config, spec), spec.workers, capacity)


def _launcher(ref: PluginRef, config: WorkerConfig, spec: ExecutorSpec) -> WorkerLauncher:
    return WorkerLauncher(ref, config.serving(spec.workers, spec.poll_us), mp_context(spec.start_method))
