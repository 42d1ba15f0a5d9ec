"""Uploaded versions in environments of their own: the environments (built by uv, shared by
content: :mod:`deepaas_like.environments`) and the hosts that serve them, one pool per
environment, its workers started with that environment's interpreter.

A host in an environment needs nothing of ours installed there: its worker starts with a
runtime directory first on its path (links to deepaas_like, the ``deepaas`` compatibility
package, the framework plugins' packages; see :func:`runtime`), and learns the framework
plugins' entry points from the server (:data:`.host.FRAMEWORKS_ENV`), since the environment
has no distribution that declares them::

    pools = EnvironmentPools(root, runtime_dir, lambda launch: registry_pool(section, launch))
    env = await pools.build(["scikit-learn==1.6.1"], log=print)
    pool = pools.pool(env.key)          # not started
    pools.start(env.key)                # in the background; pool.started is set when done
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import stat
from pathlib import Path
from typing import Callable, Sequence

from ..background import Background
from ..engine.shared import RaySharedPool, SharedPool
from ..engine.worker import EnvironmentLaunch
from ..environments import Environment, EnvironmentStore, drop_user, record_user
from ..frameworks import framework_packages
from ..isolated import runtime_dir

LOG = logging.getLogger(__name__)
USER_PREFIX = "version:"
# The server's JSON encoder, which a contained worker writes its messages with: the
# environments are made with the server's interpreter, so its compiled module runs there.
RUNTIME_MODULES = ("orjson",)


def runtime(where: Path) -> Path:
    """The directory first on the path of a host in a version's environment: deepaas_like,
    ``deepaas``, the framework plugins' packages and :data:`RUNTIME_MODULES`, as links to
    the server's (readable by a sandbox user: the server's umask is 077)."""
    links = {name: Path(target) for name, target in framework_packages().items()}
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            links[name] = Path(list(spec.submodule_search_locations)[0])
    runtime_dir(where, links)
    where.chmod(0o755)
    return where


def user_id(model: str, number: int) -> str:
    """How a version is recorded as a user of its environment (``deepaas-env gc`` keeps it)."""
    return f"{USER_PREFIX}{model}/{number}"


Pool = SharedPool | RaySharedPool


class EnvironmentPools:
    """The environments of uploaded versions under ``root`` and a pool of hosts for each one
    in use, made by ``make_pool`` (``runtime_path``: where :func:`runtime` is made). Tests may
    give ``store`` another uv cache."""

    def __init__(self, root: Path, runtime_path: Path, make_pool: Callable[[EnvironmentLaunch], Pool]) -> None:
        self.store = EnvironmentStore(root)
        self._runtime_path = runtime_path
        self._runtime: Path | None = None
        self._make_pool = make_pool
        self._pools: dict[str, Pool] = {}
        self._started: set[str] = set()
        self._background = Background("registry environments")

    @property
    def root(self) -> Path:
        return self.store.root

    async def build(self, requirements: Sequence[str], log: Callable[[str], None]) -> Environment:
        """The environment with ``requirements`` (built, or found: see
        :meth:`EnvironmentStore.build`), readable by the hosts that will serve it."""

        def build() -> Environment:
            environment = self.store.build(requirements, log=log)
            if os.geteuid() == 0:  # contained hosts run as another user (--sandbox-user)
                _readable(environment.path)
            return environment

        return await asyncio.to_thread(build)

    def missing(self, key: str) -> str | None:
        """Why environment ``key`` cannot serve (removed since), or None."""
        if self.store.get(key) is not None:
            return None
        return f"its environment {key[:12]} is gone (removed with deepaas-env?); upload the version again"

    def launch(self, key: str) -> EnvironmentLaunch:
        """How a worker in environment ``key`` starts: its interpreter, :func:`runtime` first on its path."""
        if self._runtime is None:
            self._runtime = runtime(self._runtime_path)
        return EnvironmentLaunch(str(self.root / key / "bin" / "python"), (str(self._runtime),))

    def pool(self, key: str) -> Pool:
        """The hosts of environment ``key`` (created on first use, not started)."""
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._make_pool(self.launch(key))
        return pool

    def start(self, key: str) -> Pool:
        """The hosts of environment ``key``, started once (in the background)."""
        pool = self.pool(key)
        if key not in self._started:
            self._started.add(key)
            self._background.spawn(_start(pool, key))
        return pool

    async def close(self, timeout: float) -> None:
        await self._background.cancel_all()
        for key in self._started:
            await self._pools[key].stop(timeout)

    def record(self, model: str, number: int, key: str) -> None:
        """Version ``number`` of ``model`` uses environment ``key``: gc keeps it."""
        record_user(self.root, user_id(model, number), key, kind="version", model=model, version=number)

    def drop(self, model: str, number: int) -> None:
        drop_user(self.root, user_id(model, number))


async def _start(pool: Pool, key: str) -> None:
    try:
        await pool.start()
    except Exception as exc:  # the versions of this environment are then unavailable, with this reason
        LOG.error("registry: the workers of environment %s could not start: %s", key[:12], exc)


def _readable(path: Path) -> None:
    """Let every user read ``path`` and what it holds (and enter its directories, run its
    programs): a built environment holds packages, nothing of the server's."""
    for folder, directories, files in os.walk(path):
        for name in [".", *directories, *files]:
            entry = os.path.join(folder, name)
            info = os.lstat(entry)
            if stat.S_ISLNK(info.st_mode):
                continue
            wanted = info.st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR:
                wanted |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            if wanted != info.st_mode:
                os.chmod(entry, stat.S_IMODE(wanted))
