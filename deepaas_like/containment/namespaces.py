"""How a contained worker starts: namespaces of its own (network, PID, IPC, mount, and a
user namespace when not root), the PID namespace's init that outlives nothing, a separate
user with no capabilities, and the mounts it sees (its scratch, a private ``/dev/shm``,
the directories a separate user needs on the way to the interpreter)."""

from __future__ import annotations

import ctypes
import os
import pwd
import resource
import select
import signal
import stat
import sys
from typing import Iterable

from .landlock_rules import outermost
from .spec import Containment, SandboxError

# unshare(2) flags
_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
# mount(2) flags
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

SHM, SHM_SIZE = "/dev/shm", "64m"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount_tmpfs(path: str, options: str) -> None:
    _check(
        _libc().mount(b"tmpfs", path.encode(), b"tmpfs", ctypes.c_ulong(_MS_NOSUID | _MS_NODEV), options.encode()),
        f"mount tmpfs on {path}",
    )


def enter_namespaces(as_root: bool, uid: int, gid: int, report: Containment) -> bool:
    """Unshare the network, PID, IPC and mount namespaces (in a user namespace when not
    root) and mount a private ``/dev/shm``; whether this kernel allowed it."""
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWPID
    libc = _libc()
    if not as_root:
        flags |= _CLONE_NEWUSER
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        report.missing.append(f"namespaces ({os.strerror(err)})")
        return False
    if not as_root:  # the same user inside as outside, nothing more
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    # Mounts made here stay here (the namespace exists already: this cannot be skipped).
    _check(libc.mount(None, b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None), "mount --make-rprivate /")
    # A /dev/shm of its own, small: joblib and multiprocessing need semaphores, nobody else's are seen.
    _mount_tmpfs(SHM, f"mode=1777,size={SHM_SIZE}")
    report.layers.append(
        "network, PID, IPC and mount namespaces"
        + ("" if as_root else " (in a user namespace)")
        + f", a private {SHM} of {SHM_SIZE}"
    )
    return True


def mount_scratch(path: str, owner: tuple[int, int], size: int) -> None:
    """The worker's scratch directory as a tmpfs of ``size`` bytes, gone with the namespace."""
    _mount_tmpfs(path, f"mode=0700,uid={owner[0]},gid={owner[1]},size={size}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def fork_behind_init() -> None:
    """Fork the new PID namespace's init, which forks the process that goes on (and returns
    here). This process stays outside: it waits for the init and ends as it did."""
    outside = os.pidfd_open(os.getpid())  # the init watches it: it may die before the init is ready
    init = os.fork()
    if init:
        os.close(outside)
        _wait_and_end_as(init)
    die_with_parent()
    if select.select([outside], [], [], 0)[0]:  # the outside process is gone already
        os._exit(1)
    worker = os.fork()
    if worker == 0:
        os.close(outside)
        return
    # The init: our code only. It holds none of the worker's descriptors, so the server sees
    # the worker's end at once; it reaps what the worker leaves behind; it ends with the worker
    # (and, dying, ends every process of the namespace).
    _wait_and_end_as(worker)


# What the outside process and the init become (see _wait_and_end_as): reap every child, end
# as ``argv[1]`` ended. A fresh interpreter without site (-S): 7 MiB, against the 20-26 MiB of
# a copy of the worker's interpreter as it was when it forked them.
_WAITER = """import os, signal, sys
child = int(sys.argv[1])
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        os._exit(1)
    except InterruptedError:
        continue
    if pid == child:
        break
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
"""


def _wait_and_end_as(child: int) -> None:
    """Reap every child of this process until ``child`` ends, then end as it did: as a fresh,
    small interpreter running :data:`_WAITER` (a parent's children stay its own through exec),
    else here. Holds no descriptor (the server's end of the pipe must see the worker go away)
    and takes SIGTERM's default."""
    os.closerange(3, _max_fd())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _WAITER, str(child)])
    except OSError:  # the same program, here (it ends this process)
        sys.argv = ["-c", str(child)]
        exec(_WAITER, {"__name__": "__main__"})  # noqa: S102 - our own constant


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 65536


def die_with_parent() -> None:
    """Be killed when the parent ends (and end now if it has already)."""
    parent = os.getppid()
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def drop_capabilities() -> None:
    """The capabilities a user namespace gave: all gone (bounding set, then the sets)."""
    libc = _libc()
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def sandbox_user(name: str) -> tuple[int, int]:
    """The uid and gid of the user a worker runs as when the server is root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(f"the sandbox user {name!r} does not exist (--sandbox-user)") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"the sandbox user {name!r} is root; name an unprivileged user (--sandbox-user)")
    return entry.pw_uid, entry.pw_gid


def reveal(needed: Iterable[str], uid: int, gid: int, report: Containment) -> None:
    """Let ``uid`` reach each needed directory: a directory on the way that it may not enter
    (``/root``, mode 0700) is covered by an empty one in which only the needed directories
    are mounted again. The rest of it is invisible to the worker."""
    blocked: dict[str, list[str]] = {}
    for path in outermost(needed):
        top = _first_closed(path, uid, gid)
        if top is not None:
            blocked.setdefault(top, []).append(path)
    libc = _libc()
    for top, paths in blocked.items():
        handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in paths}
        _mount_tmpfs(top, "mode=0755,size=64k")
        for path, fd in handles.items():
            _open_dirs(top, path)
            _check(
                libc.mount(
                    f"/proc/self/fd/{fd}".encode(), path.encode(), None, ctypes.c_ulong(_MS_BIND | _MS_REC), None
                ),
                f"bind {path}",
            )
            os.close(fd)
        report.layers.append(f"{top} hidden but for {', '.join(paths)}")


def _open_dirs(top: str, path: str) -> None:
    """Create ``path`` under ``top`` (an empty tmpfs), every directory on the way open to all
    (whatever the umask: the server's is 077)."""
    current = top
    for part in path[len(top) :].strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.path.isdir(current):
            os.mkdir(current)
        os.chmod(current, 0o755)


def _first_closed(path: str, uid: int, gid: int) -> str | None:
    """The first directory from / down to ``path`` that ``uid`` may not search."""
    parts = path.strip("/").split("/")
    for depth in range(len(parts) + 1):
        current = "/" + "/".join(parts[:depth])
        try:
            info = os.stat(current)
        except OSError:
            return None
        if info.st_uid == uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return current
    return None
