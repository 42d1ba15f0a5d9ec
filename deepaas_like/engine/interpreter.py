"""A worker started as a fresh interpreter (``python -I``): a contained worker (the server's
interpreter, a clean environment, a scratch directory of its own), or a worker in a model's
own environment (that environment's interpreter). The rest of a worker's life is
:class:`~deepaas_like.engine.process.WorkerProcess`'s, whichever way it started."""

from __future__ import annotations

import os
import pickle
import pwd
import subprocess
import sys
import tempfile
from typing import Any, Protocol

from .worker import PICKLE_PROTOCOL, THREAD_ENV

# What a contained worker keeps of the server's environment: enough to run, and the operator's
# sizes of the numeric libraries' thread pools (without them torch takes every core in each worker)
CLEAN_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", *THREAD_ENV)


class ChildProcess(Protocol):
    """What :class:`WorkerProcess` uses of its process: a ``multiprocessing`` one, or an
    :class:`IsolatedProcess`."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def start(self) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class IsolatedProcess:
    """A worker's process started as a fresh interpreter (``python -I``) in a session of its
    own, with no descriptor of the server's but its pipes: a contained worker (with a clean
    environment), or a worker in a model's own environment (that environment's interpreter,
    with this package's directories first on its path).

    (multiprocessing's spawn would hand a contained worker the server's environment and
    command line, where a store URL with its password may be, and the pipe of the server's
    resource tracker; and it runs the server's interpreter.) Offers what
    :class:`WorkerProcess` uses of a ``multiprocessing.Process``.
    """

    COMMAND = (
        "import sys; sys.path[0:0] = sys.argv[4:]; "
        "from deepaas_like.engine.worker import isolated_main; isolated_main()"
    )

    def __init__(self, args: tuple[Any, ...]) -> None:
        self._conn, self._ref, self._config = args[:3]
        self._files = args[3] if len(args) > 3 else None
        self._popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def start(self) -> None:
        read, write = os.pipe()
        fds = (read, self._conn.fileno(), *([self._files.fileno()] if self._files is not None else []))
        launch = self._config.environment
        python, paths = (launch.python, launch.paths) if launch is not None else (sys.executable, ())
        environ: dict[str, str] | None = {name: os.environ[name] for name in CLEAN_ENVIRONMENT if name in os.environ}
        if self._config.sandbox is None:
            environ = None  # a plugin's worker: the server's environment, as a spawned one has
        try:
            self._popen = subprocess.Popen(
                [python, "-I", "-c", self.COMMAND, *map(str, fds), *(["-1"] if self._files is None else []), *paths],
                env=environ,
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(read)
        self.pid = self._popen.pid
        with os.fdopen(write, "wb") as fh:  # a few KB: the pipe takes it without waiting for the reader
            pickle.dump((self._ref, self._config), fh, protocol=PICKLE_PROTOCOL)

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def terminate(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()

    def kill(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()

    def close(self) -> None:
        self._popen = None


SCRATCH_PREFIX = "deepaas-like-sandbox-"
_SWEPT: list[bool] = []


def scratch_dir(user: str) -> str:
    """A new private directory for a contained worker (its TMPDIR), owned by the user it
    will run as; named after this server's pid, so that the next server removes those a
    killed one left (its workers keep their files in a tmpfs of their own: the directory
    itself stays empty)."""
    if not _SWEPT:
        _SWEPT.append(True)
        sweep_scratch(tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:  # the worker says so when it starts
            return path
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def sweep_scratch(root: str) -> list[str]:
    """Remove the empty scratch directories under ``root`` of servers that no longer run
    (killed: a clean stop removes its own); which were removed."""
    removed = []
    for name in os.listdir(root):
        pid = name[len(SCRATCH_PREFIX) :].split("-", 1)[0] if name.startswith(SCRATCH_PREFIX) else ""
        if not pid.isdigit() or _running(int(pid)):
            continue
        try:
            os.rmdir(os.path.join(root, name))  # an empty one only
        except OSError:
            continue
        removed.append(name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
