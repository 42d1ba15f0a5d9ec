"""Containment of a worker process that loads uploaded model files.

Loading a pickle (or a joblib file) runs whatever code its author put in it. The server
never loads one itself; the worker that does is contained by the kernel's own mechanisms
before it reads the first uploaded byte (:func:`contain`, standard library only):

* **Landlock** (:mod:`deepaas_like.containment.landlock`): read-only access to what Python and the
  framework libraries need (the interpreter, the import paths, ``/usr``, a few files of
  ``/etc``, its own ``/proc`` entry); nothing at all of the data directory, the artifact
  directory, the token key, the JWT secret, the SQLite store or the config file; writing
  only in a scratch directory of its own; no TCP ``bind``/``connect``; no signal to, and no
  abstract UNIX socket of, any process outside the sandbox (ABI 6). The uploaded file
  itself reaches the worker as an open file descriptor, passed by the server for the
  call that needs it, so the worker never gets a path into the artifact directory.
* **Namespaces**: a network namespace of its own (no network at all, UDP included), a
  PID namespace (the worker cannot see the server's process, and every process it forks
  dies with it), IPC and mount namespaces. As root they are the kernel's; otherwise
  inside a user namespace of the worker's own, where the kernel allows one.
* **A separate user** when the server runs as root (``--sandbox-user``, ``nobody`` by
  default): the worker holds no capability. Directories that user cannot enter on the
  way to the interpreter (Python installed under ``/root``) are covered, in the worker's
  own mount namespace, by an empty directory that shows only what it needs.
* **seccomp** (:mod:`deepaas_like.containment.seccomp`): no ``socket()`` (UNIX sockets named by a path
  are beyond Landlock), no new namespaces.
* **rlimits**: memory (``RLIMIT_AS``), processes and threads (``RLIMIT_NPROC``), the size of
  a file it writes, open files, no core dumps; its scratch directory is a tmpfs of bounded
  size.

The worker's process itself is started clean by the server
(:class:`~deepaas_like.engine.process.IsolatedProcess`: a fresh interpreter, a session of its
own, no environment of the server's, no descriptor but its pipes).

:func:`contain` answers a :class:`Containment`: what was applied and what this kernel
could not do. The server serves formats whose loading runs code only from workers that
report ``contained`` (or with ``--allow-unconfined-code``).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import resource
import select
import signal
import socket
import stat
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import landlock, seccomp

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

SYSTEM_ROOTS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
# What of /etc a Python process and its libraries read: the loader, users and groups, time
# zones, name resolution, certificates. Not the rest (shadow files, ssh keys, our config).
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "resolv.conf",
    "gai.conf",
    "protocols",
    "services",
    "mime.types",
    "ssl/certs",
    "ca-certificates",
    "ca-certificates.conf",
    "os-release",
    "debian_version",
    "lsb-release",
    "alternatives",
)
PROC_FILES = ("cpuinfo", "meminfo", "stat", "loadavg", "uptime", "version", "filesystems", "sys")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
SHM, SHM_SIZE = "/dev/shm", "64m"
MIN_LANDLOCK = 4  # files and TCP; signals and abstract sockets need 6 or the namespaces


class SandboxError(RuntimeError):
    """The sandbox cannot be set up as configured (an unknown or privileged --sandbox-user)."""


@dataclass(frozen=True)
class SandboxSpec:
    """How to contain a worker (built by the server, applied by the worker; picklable).

    ``deny``: paths the worker must not reach at all. ``scratch``: its own writable
    directory (set per worker process).
    """

    deny: tuple[str, ...] = ()
    scratch: str = ""
    user: str = "nobody"
    memory: int = 0  # RLIMIT_AS, bytes; 0: unlimited
    tasks: int = 256  # processes and threads the worker may add
    file_size: int = 0  # RLIMIT_FSIZE, bytes; 0: unlimited
    open_files: int = 4096
    reply_limit: int = 0  # the server reads no message larger than this (bytes; 0: no limit)


@dataclass
class Containment:
    """What :func:`contain` applied (``layers``) and could not (``missing``)."""

    layers: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    landlock_abi: int = 0
    contained: bool = False  # Landlock's files and TCP rules, signals kept in, no root
    pid: int = 0  # the worker's process id as the server sees it

    def summary(self) -> str:
        text = "; ".join(self.layers) or "nothing"
        return text + (f" (not available: {'; '.join(self.missing)})" if self.missing else "")

    def to_json(self) -> dict:
        return {
            "layers": list(self.layers),
            "missing": list(self.missing),
            "landlock_abi": self.landlock_abi,
            "contained": self.contained,
        }


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def contain(spec: SandboxSpec) -> Containment:
    """Contain this process as ``spec`` says, for good, as far as this kernel allows; the
    answer says how far (``contained``: every essential layer is in place).

    With namespaces this forks twice: the process that called it stays outside and waits,
    the first child is the PID namespace's init (our code: it reaps and waits), and the
    second goes on, contained, to serve. Whatever happens to the contained process, the
    namespace, with every process in it, ends when the outside one does (the server's
    kill, or the server's end)."""
    report = Containment(landlock_abi=landlock.abi())
    needed = needed_roots()
    uid, gid = os.getuid(), os.getgid()
    as_root = os.geteuid() == 0
    target = _sandbox_user(spec.user) if as_root else None
    in_namespaces = _enter_namespaces(as_root, uid, gid, report)
    if in_namespaces:
        if target is not None:
            _reveal(needed, *target, report)
        if spec.scratch:  # its files in a tmpfs of bounded size, gone with the namespace
            owner = target or (uid, gid)
            _check(
                _libc().mount(
                    b"tmpfs",
                    spec.scratch.encode(),
                    b"tmpfs",
                    ctypes.c_ulong(_MS_NOSUID | _MS_NODEV),
                    f"mode=0700,uid={owner[0]},gid={owner[1]},size={_scratch_size(spec)}".encode(),
                ),
                f"mount tmpfs on {spec.scratch}",
            )
        _fork_behind_init()  # returns in the contained process, pid 2 of the new namespace
    _die_with_parent()
    separate_user = False
    if target is not None and in_namespaces:
        os.setgroups([])
        os.setresgid(target[1], target[1], target[1])
        os.setresuid(target[0], target[0], target[0])  # every capability goes with uid 0
        _die_with_parent()  # a change of user clears it
        separate_user = True
        report.layers.append(f"user {spec.user} ({target[0]}), no capabilities")
    elif in_namespaces:
        _drop_capabilities()
    elif as_root:
        report.missing.append("a separate user (it needs the mount namespace)")
    report.pid = int(os.readlink("/proc/self"))
    if spec.scratch:
        os.environ.update(TMPDIR=spec.scratch, HOME=spec.scratch)
        os.chdir(spec.scratch)
    _limit(spec, counted_from=0 if in_namespaces and not as_root else _tasks_of(os.getuid()), report=report)
    sys.dont_write_bytecode = True
    applied = _landlock(spec, needed, report, private_shm=in_namespaces)
    filtered = _filter_system_calls(report)
    # Contained: Landlock's files and TCP rules, the namespaces (no network at all, no view of
    # the server, everything it starts dies with it), the system call filter, and no root.
    report.contained = applied >= MIN_LANDLOCK and in_namespaces and filtered and (separate_user or not as_root)
    return report


def _scratch_size(spec: SandboxSpec) -> int:
    return (spec.file_size or 1024 * 1024 * 1024) + 64 * 1024 * 1024


# --- namespaces --------------------------------------------------------------------------


def _enter_namespaces(as_root: bool, uid: int, gid: int, report: Containment) -> bool:
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
    _check(
        libc.mount(
            b"tmpfs",
            SHM.encode(),
            b"tmpfs",
            ctypes.c_ulong(_MS_NOSUID | _MS_NODEV),
            f"mode=1777,size={SHM_SIZE}".encode(),
        ),
        f"mount tmpfs on {SHM}",
    )
    report.layers.append(
        "network, PID, IPC and mount namespaces"
        + ("" if as_root else " (in a user namespace)")
        + f", a private {SHM} of {SHM_SIZE}"
    )
    return True


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _fork_behind_init() -> None:
    """Fork the new PID namespace's init, which forks the process that goes on (and returns
    here). This process stays outside: it waits for the init and ends as it did."""
    outside = os.pidfd_open(os.getpid())  # the init watches it: it may die before the init is ready
    init = os.fork()
    if init:
        os.close(outside)
        _wait_and_end_as(init)
    _die_with_parent()
    if select.select([outside], [], [], 0)[0]:  # the outside process is gone already
        os._exit(1)
    worker = os.fork()
    if worker == 0:
        os.close(outside)
        return
    # The init: our code only. It holds none of the worker's descriptors, so the server sees
    # the worker's end at once; it reaps what the worker leaves behind; it ends with the worker
    # (and, dying, ends every process of the namespace).
    os.closerange(3, _max_fd())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid == worker:
            _end_as(status)


def _wait_and_end_as(child: int) -> None:
    os.closerange(3, _max_fd())  # the server's end of the pipe must see the worker go away
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    _end_as(status)


def _end_as(status: int) -> None:
    """End this process as the one whose wait ``status`` this is ended (its exit code or signal)."""
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 65536


def _die_with_parent() -> None:
    parent = os.getppid()
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _drop_capabilities() -> None:
    """The capabilities a user namespace gave: all gone (bounding set, then the sets)."""
    libc = _libc()
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def _sandbox_user(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(f"the sandbox user {name!r} does not exist (--sandbox-user)") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"the sandbox user {name!r} is root; name an unprivileged user (--sandbox-user)")
    return entry.pw_uid, entry.pw_gid


def _reveal(needed: Iterable[str], uid: int, gid: int, report: Containment) -> None:
    """Let ``uid`` reach each needed directory: a directory on the way that it may not enter
    (``/root``, mode 0700) is covered by an empty one in which only the needed directories
    are mounted again. The rest of it is invisible to the worker."""
    blocked: dict[str, list[str]] = {}
    for path in _outermost(needed):
        top = _first_closed(path, uid, gid)
        if top is not None:
            blocked.setdefault(top, []).append(path)
    libc = _libc()
    for top, paths in blocked.items():
        handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in paths}
        _check(
            libc.mount(b"tmpfs", top.encode(), b"tmpfs", ctypes.c_ulong(_MS_NOSUID | _MS_NODEV), b"mode=0755,size=64k"),
            f"mount tmpfs on {top}",
        )
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


# --- what may be read ------------------------------------------------------------------


def needed_roots() -> list[str]:
    """What Python and the framework plugins read: the interpreter's prefixes, the import
    paths, deepaas_like itself and the framework plugins' packages."""
    import importlib.metadata
    import importlib.util

    from ..frameworks import GROUP

    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    }  # deepaas_like
    paths.update(p for p in sys.path if p)
    for ep in importlib.metadata.entry_points(group=GROUP):
        top = ep.value.split(":")[0].split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            paths.update(spec.submodule_search_locations)
        elif spec is not None and spec.origin:
            paths.add(os.path.dirname(spec.origin))
    return sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(_inside(path, other) for other in kept):
            kept.append(path)
    return kept


def _landlock(spec: SandboxSpec, needed: list[str], report: Containment, private_shm: bool) -> int:
    """Apply the Landlock rules; the ABI they were applied with (0: none)."""
    if report.landlock_abi < 1:
        report.missing.append("Landlock (this kernel has none)")
        return 0
    try:
        ruleset = landlock.Ruleset(report.landlock_abi)
        deny = sorted({os.path.realpath(p) for p in spec.deny if p})
        reads = [
            *needed,
            *SYSTEM_ROOTS,
            *(f"/etc/{name}" for name in ETC_FILES),
            "/sys",
            "/proc/self",
            *(f"/proc/{name}" for name in PROC_FILES),
        ]
        skipped = []
        for path in _outermost(os.path.realpath(p) for p in reads if os.path.lexists(p)):
            if any(_inside(path, d) for d in deny):
                skipped.append(path)
                continue
            _allow_except(ruleset, path, landlock.READ, [d for d in deny if _inside(d, path)])
        for device in DEVICES:
            ruleset.allow(device, landlock.READ_FILE | landlock.WRITE_FILE | landlock.IOCTL_DEV)
        if spec.scratch:
            ruleset.allow(spec.scratch, landlock.ALL_FS)
        if private_shm:
            ruleset.allow(SHM, landlock.ALL_FS)
        ruleset.restrict_self()
    except OSError as exc:
        report.missing.append(f"Landlock ({exc})")
        return 0
    what = [
        "read-only: the interpreter, its packages and system libraries"
        + (f" (not {', '.join(skipped)}: inside a denied path)" if skipped else ""),
        "writes: its scratch only",
    ]
    if ruleset.handled_net:
        what.append("no TCP bind or connect")
    else:
        report.missing.append(f"Landlock TCP rules (ABI {report.landlock_abi} < 4)")
    if ruleset.scoped:
        what.append("no signals or abstract sockets outside")
    else:
        report.missing.append(f"Landlock signal and abstract-socket scoping (ABI {report.landlock_abi} < 6)")
    report.layers.append(f"Landlock ABI {report.landlock_abi} ({', '.join(what)})")
    return report.landlock_abi


def _filter_system_calls(report: Containment) -> bool:
    """The seccomp filter of :mod:`deepaas_like.containment.seccomp`; whether it is in place."""
    if not seccomp.supported():
        report.missing.append("a system call filter (seccomp: this architecture is not known)")
        return False
    try:
        seccomp.deny_for_worker()
    except OSError as exc:
        report.missing.append(f"a system call filter (seccomp: {exc})")
        return False
    report.layers.append("seccomp: no socket(), no new namespaces")
    return True


def _allow_except(ruleset: landlock.Ruleset, path: str, rights: int, holes: list[str]) -> None:
    """Allow ``rights`` beneath ``path`` but for the ``holes`` inside it (by allowing each of
    the siblings on the way down to them)."""
    if not holes:
        ruleset.allow(path, rights)
        return
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        child = os.path.join(path, entry.name)
        if child in holes or entry.is_symlink():
            continue
        ruleset_holes = [h for h in holes if _inside(h, child)]
        _allow_except(ruleset, child, rights, ruleset_holes)


# --- limits ----------------------------------------------------------------------------


def _limit(spec: SandboxSpec, counted_from: int, report: Containment) -> None:
    def lower(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    lower(resource.RLIMIT_CORE, 0)
    lower(resource.RLIMIT_NOFILE, spec.open_files)
    lower(resource.RLIMIT_NPROC, counted_from + spec.tasks)
    if spec.memory:
        lower(resource.RLIMIT_AS, spec.memory)
    if spec.file_size:
        lower(resource.RLIMIT_FSIZE, spec.file_size)
    limits = [f"{spec.tasks} more tasks", f"{spec.open_files} open files"]
    if spec.memory:
        limits.append(f"{spec.memory // (1024 * 1024)} MiB of address space")
    report.layers.append("rlimits: " + ", ".join(limits))


def _tasks_of(uid: int) -> int:
    """The processes and threads ``uid`` has now (RLIMIT_NPROC counts them all)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


# --- the uploaded files -----------------------------------------------------------------


class FileChannel:
    """The worker's end of the channel that brings it the uploaded files it serves: it
    asks for a target's file over its pipe, and the server answers on this socket with an
    open descriptor (SCM_RIGHTS). The file is copied into the scratch directory, named
    with its type's extension, and the copy is removed once the model is loaded."""

    def __init__(self, sock: socket.socket, ask: Callable[[str], None], scratch: str) -> None:
        self._sock = sock
        self._ask = ask
        self._scratch = scratch

    def local_copy(self, key: str, filetype: str) -> str:
        self._ask(key)
        message, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
        if not fds:
            raise FileNotFoundError(message.decode("utf-8", "replace") or "the server sent no file")
        name = "".join(c for c in key.split(":")[0] if c.isalnum())[:64] or "model"
        path = os.path.join(self._scratch, f"{name}.{filetype}")
        with os.fdopen(fds[0], "rb") as source, open(path, "wb") as copy:
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        return path

    def done_with(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
