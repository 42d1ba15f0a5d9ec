"""Worker processes forked from a helper that has the models' libraries imported already.

A worker started with ``spawn`` is a fresh interpreter: before it can warm, it imports the
plugin and every library the plugin uses (scikit-learn alone takes 1.5-3.5 s on a 2-CPU
machine). A training paid that twice, once for its own process and once for the re-warmed
workers that serve the trained model: 5 s for a training that does nothing.

With ``--start-method forkserver`` (the default), each model's first workers are spawned,
and each reports the libraries it has imported once the plugin is loaded and warm. The
first time a process is wanted after every model has started (a training, the workers
re-warmed after one, a replacement of a lost or recycled worker), a helper process
(multiprocessing's fork server) starts and imports those libraries, once, in the
background; every later worker process is forked from it and only imports the plugin and
warms. Until the helper is ready, processes are spawned as before. The helper holds the
libraries' memory (200 MiB for scikit-learn's): a server whose workers never change never
starts it.

A worker, spawned or forked by the helper, does not import the server's main module
(multiprocessing would, to find what the parent's ``__main__`` defined: ``deepaas-run``'s
script imports the whole server, 45-60 MiB of modules and about a second, in every worker):
a worker's target and its plugin are always named by module (see
:class:`~deepaas_like.loading.PluginRef`).

What the helper imports: this framework's modules and those of the interpreter's own library
directories (the standard library, site-packages), in the order the workers imported them,
never a module of a plugin's own distribution or one outside those directories (a plugin
installed editable).
So every worker imports its plugin afresh, and whatever a plugin reads when it is imported
(weights a training has just written) it reads again. A forked worker's numeric libraries
are sized to its share of the CPUs through threadpoolctl, as a spawned worker's are through
its environment.

``--start-method spawn`` starts every process as a fresh interpreter (for libraries that
cannot be used in a process forked after they were imported).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import sys
import sysconfig
import threading
from typing import Any, Iterable, Protocol, cast

LOG = logging.getLogger(__name__)
_ENV = "DEEPAAS_LIKE_PRELOAD"
PRELOADED = False  # True in the helper, and so in every process forked from it


def library_dirs() -> tuple[str, ...]:
    """The interpreter's own library directories (standard library and site-packages)."""
    paths = sysconfig.get_paths()
    found = {os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(sorted(path + os.sep for path in found))


def own_packages(value: str, distribution: str | None) -> set[str]:
    """The top-level names of a plugin's own code: its entry point's and its distribution's."""
    names = {value.split(":")[0].split(".")[0]}
    if distribution:
        try:
            files = importlib.metadata.distribution(distribution).files or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        for path in files:
            top = path.parts[0] if path.parts else ""
            if top and not top.endswith((".dist-info", ".egg-info", ".pth")) and ".." not in path.parts:
                names.add(top[:-3] if top.endswith(".py") else top)
    return names


def imported_libraries(own: set[str]) -> list[str]:
    """The modules this process has imported, in import order, that are ours or come from
    the interpreter's library directories, and are none of ``own``'s (top-level names)."""
    dirs = library_dirs()
    found = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in own:
            continue
        path = getattr(module, "__file__", None)
        ours = name == "deepaas_like" or name.startswith("deepaas_like.")  # never a plugin, wherever installed
        if isinstance(path, str) and (ours or os.path.realpath(path).startswith(dirs)):
            found.append(name)
    return found


class Starter:
    """How this server starts worker processes: ``Process(...)`` as a multiprocessing
    context's, forked from the preloaded helper once it is ready, spawned until then."""

    def __init__(self, method: str) -> None:
        self._spawn = multiprocessing.get_context("spawn")
        self._fork = multiprocessing.get_context("forkserver") if method == "forkserver" else None
        self._learned: dict[str, None] = {}  # ordered: the order the workers imported them
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None
        self._armed = False
        self.ready = False

    def learn(self, libraries: Iterable[str]) -> None:
        """Libraries a worker imported (its ``ready`` report); the helper preloads them."""
        if self._fork is not None and self._warming is None:
            self._learned.update(dict.fromkeys(libraries))

    def arm(self) -> None:
        """Every model has started: the next process asked for starts the helper (see the module)."""
        self._armed = True

    def prepare(self) -> None:
        """Start the helper in the background (once), with what has been learned so far."""
        with self._lock:
            if self._fork is None or self._warming is not None or not self._learned:
                return
            self._warming = threading.Thread(
                target=self._warm, args=(list(self._learned),), name="deepaas-like forkserver", daemon=True
            )
            self._warming.start()

    def _warm(self, libraries: list[str]) -> None:
        assert self._fork is not None
        self._fork.set_forkserver_preload(["deepaas_like.engine.worker", "deepaas_like.engine.preload"])
        os.environ[_ENV] = "\n".join(libraries)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            os.environ.pop(_ENV, None)
        try:  # the first fork waits for the preload: here, not in a request's start of a worker
            probe = _Forked(target=_nothing, name="deepaas-like forkserver probe")
            probe.start()
            probe.join()
            if probe.exitcode != 0:
                raise RuntimeError(f"a process forked from it exited with {probe.exitcode}")
        except Exception as exc:  # keep spawning
            LOG.warning("worker processes keep being spawned: the fork server did not start (%s)", exc)
            return
        self.ready = True
        LOG.info(
            "worker processes are forked from a helper with %d modules of the models' libraries imported",
            len(libraries),
        )

    def Process(self, *, target: Any, args: tuple[Any, ...] = (), **kwargs: Any) -> multiprocessing.process.BaseProcess:  # noqa: N802 (a context's name)
        if self._fork is not None and self.ready:  # the server's environment now, as a spawned process gets it
            return _Forked(target=_in_environment, args=(dict(os.environ), target, args), **kwargs)
        if self._armed:
            self.prepare()
        return _Spawned(target=target, args=args, **kwargs)


class _WithoutMain(multiprocessing.process.BaseProcess):
    """A process that does not import the parent's ``__main__`` (see the module): multiprocessing
    tells a spawned process, and one forked by the fork server alike, to import it first."""

    def start(self) -> None:
        with _MAIN_HIDDEN:  # processes may start in several threads at once
            main = sys.modules["__main__"]
            hidden: dict[str, Any] = {n: main.__dict__.pop(n) for n in ("__file__", "__spec__") if n in main.__dict__}
            main.__spec__ = None  # multiprocessing reads it (a ``python -m`` main's module name)
            try:
                super().start()
            finally:
                del main.__spec__
                main.__dict__.update(hidden)


class _Spawned(_WithoutMain, multiprocessing.context.SpawnProcess):
    pass


class _Forked(_WithoutMain, multiprocessing.context.ForkServerProcess):
    pass


_MAIN_HIDDEN = threading.Lock()


class _ForkServerState(Protocol):
    """What CPython's fork server keeps of the helper (private: typeshed does not list it)."""

    _forkserver_alive_fd: int | None
    _forkserver_address: str | None


def _in_environment(environ: dict[str, str], target: Any, args: tuple[Any, ...]) -> None:
    """In a forked process: the server's environment of when it was started, then ``target``.

    multiprocessing hands each forked process the pipe whose end tells the helper that nobody
    needs it any more: held here, the helper would outlive a server killed with SIGKILL as long
    as this process runs, and this process (which dies with its parent, the helper) would never
    be told. Closed, the server's death ends the helper, and the helper's ends this process.
    """
    server = cast(_ForkServerState, multiprocessing.forkserver._forkserver)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        server._forkserver_alive_fd = None  # a forkserver process the plugin asks for gets a helper of its own
        server._forkserver_address = None
    os.environ.clear()
    os.environ.update(environ)
    target(*args)


def _nothing() -> None:
    """What the probe process runs."""


_STARTERS: dict[str, Starter] = {}


def starter(method: str) -> Starter:
    """The one :class:`Starter` of this server process for ``method`` (the fork server is one per process)."""
    if method not in _STARTERS:
        _STARTERS[method] = Starter(method)
    return _STARTERS[method]


def arm_all() -> None:
    """Every model has started: each helper starts when its next process is asked for."""
    for each in list(_STARTERS.values()):
        each.arm()


def preload_from_environment() -> None:
    """In the helper: import what the server names, each on its own (one that fails is skipped).
    Called by :mod:`deepaas_like.engine.preload`, which only the helper imports: a worker
    spawned while the server's environment names the libraries (the moment the helper starts)
    must not import them."""
    global PRELOADED
    for name in os.environ.pop(_ENV, "").split("\n"):
        if name and name not in sys.modules:
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - a library that cannot be preloaded is imported by the worker
                pass
    PRELOADED = True
