"""The connection to Ray, and the life of a local head.

``ensure_ray`` connects (to ``--ray-address``, or to a local head it starts on 127.0.0.1)
and counts its users; ``release_ray`` gives one back, and the last one shuts a local head
down and removes its session directory. A server killed before that leaves a guard
process behind that ends the head's agents and removes the session.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from typing import Any

from .calls import failure_from_exception
from .process import WorkerStartFailed

LOG = logging.getLogger(__name__)


_RAY_LOCK = threading.Lock()
_RAY_USERS = 0  # runners and trainings using the connection this process opened
_RAY_OURS = False  # whether this process called ray.init (and so shuts it down)
_SESSION: list[str | None] = []  # the session directory of the local head this process started
_GUARD: list[subprocess.Popen[bytes] | None] = []  # what ends the local head's agents if this process is killed

# Run by the guard (python -S: no site, ~10 MB): wait for the server to end, then end the
# head's agents, wait (10 s at most) for its processes, and remove its session directory.
# Processes are pidfds, so a pid used again by another process is never signalled.
_GUARD_CODE = """
import os, select, shutil, signal, sys, time
session, server, agents, head = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
agents = [int(fd) for fd in agents.split(",") if fd]
head = [int(fd) for fd in head.split(",") if fd]
poll = select.poll()
poll.register(server, select.POLLIN)
poll.poll()
for agent in agents:
    try:
        signal.pidfd_send_signal(agent, signal.SIGKILL)
    except OSError:
        pass
deadline = time.monotonic() + 10
for fd in agents + head:
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    poll.poll(max(0, deadline - time.monotonic()) * 1000)
if session:
    shutil.rmtree(session, ignore_errors=True)
    latest = os.path.join(os.path.dirname(session), "session_latest")
    if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(session):
        os.unlink(latest)
"""


def ensure_ray(address: str = "") -> Any:
    """The ``ray`` module, connected to the cluster (a local head when ``address`` is empty);
    each call is one user of the connection, given back with :func:`release_ray`."""
    global _RAY_USERS, _RAY_OURS
    try:
        import ray
    except ModuleNotFoundError:
        raise WorkerStartFailed(
            failure_from_exception(ModuleNotFoundError("--executor ray needs Ray: pip install 'deepaas_like[ray]'"))
        ) from None
    with _RAY_LOCK:  # the models' runners start at once: one of them connects
        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                # Ray's own servers listen on every interface whatever the node address (Ray 2.60
                # has no setting for it): its token authentication is what keeps others out.
                if os.environ.get("RAY_AUTH_MODE", "token") != "token":
                    LOG.warning(
                        "ray: the local head listens on every interface and RAY_AUTH_MODE=%s turns "
                        "its token authentication off: anyone who reaches this machine may run code "
                        "on it",
                        os.environ["RAY_AUTH_MODE"],
                    )
                ray.init(
                    num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1"
                )
                _SESSION[:] = [_session_dir(ray)]
                _GUARD[:] = [_guard_local_head(ray, _SESSION[0])]
            _RAY_OURS = True
            LOG.info("ray: connected to %s", address or "a local head on 127.0.0.1")
        _RAY_USERS += 1
    return ray


def release_ray() -> None:
    """One user less; the last one disconnects (and stops the local head) if this process connected."""
    global _RAY_USERS, _RAY_OURS
    with _RAY_LOCK:
        _RAY_USERS -= 1
        if _RAY_USERS <= 0 and _RAY_OURS:
            import ray

            ray.shutdown()
            _RAY_USERS, _RAY_OURS = 0, False
            for session in filter(None, _SESSION):  # the local head's logs and sockets: gone with it
                shutil.rmtree(session, ignore_errors=True)
                latest = os.path.join(os.path.dirname(session), "session_latest")
                if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(session):
                    os.unlink(latest)
            _SESSION.clear()
            for guard in filter(None, _GUARD):  # the head stopped in order: nothing left to end
                guard.kill()
                guard.wait()
            _GUARD.clear()


def _guard_local_head(ray: Any, session: str | None) -> subprocess.Popen[bytes] | None:
    """A local head's GCS and raylet die with this process (Ray's kernel fate-sharing); the
    agents its raylet starts (dashboard and runtime-env agents, ~190 MB) notice, then spend
    a minute telling the dead GCS so, and the session directory stays in /tmp/ray. When this
    process is killed, a small guard process ends the agents at once and removes the session."""
    fds: list[int] = []  # every pidfd opened: closed here once the guard holds its copies

    def pidfd(pid: int) -> int:
        fds.append(os.pidfd_open(pid))
        return fds[-1]

    try:
        processes = ray._private.worker._global_node.all_processes
        head = [pidfd(info.process.pid) for infos in processes.values() for info in infos]
        raylet = processes["raylet"][0].process.pid
        agents = [pidfd(pid) for pid in _children(raylet)]
        server = pidfd(os.getpid())
    except (AttributeError, KeyError, IndexError, OSError) as exc:  # another Ray, a kernel before 5.3
        for fd in fds:
            os.close(fd)
        LOG.debug("ray: no guard for the local head's agents: %r", exc)
        return None
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-S",
                "-c",
                _GUARD_CODE,
                session or "",
                str(server),
                ",".join(map(str, agents)),
                ",".join(map(str, head)),
            ],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        LOG.debug("ray: no guard for the local head's agents: %r", exc)
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _session_dir(ray: Any) -> str | None:
    """Where the local head keeps its session (Ray does not say it in a public API)."""
    try:
        path = ray._private.worker._global_node.get_session_dir_path()
    except AttributeError:
        return None
    return path if isinstance(path, str) else None


def runtime_env(address: str) -> dict[str, Any]:
    """What Ray workers need to import what the server imports: on a local head, its sys.path."""
    if address:
        return {}
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
