"""Containment of a worker process that loads uploaded model files.

Loading a pickle (or a joblib file) runs whatever code its author put in it. The server
never loads one itself; the worker that does is contained by the kernel's own mechanisms
before it reads the first uploaded byte (:func:`contain`, standard library only):

* **Landlock** (:mod:`deepaas_like.containment.landlock`, the rules in
  :mod:`~deepaas_like.containment.landlock_rules`): read-only access to what Python and the
  framework libraries need (the interpreter, the import paths, ``/usr``, a few files of
  ``/etc``, its own ``/proc`` entry); nothing at all of the data directory, the artifact
  directory, the token key, the JWT secret, the SQLite store or the config file; writing
  only in a scratch directory of its own; no TCP ``bind``/``connect``; no signal to, and no
  abstract UNIX socket of, any process outside the sandbox (ABI 6). The uploaded file
  itself reaches the worker as an open file descriptor, passed by the server for the
  call that needs it (:class:`~deepaas_like.containment.file_channel.FileChannel`), so the
  worker never gets a path into the artifact directory.
* **Namespaces** (:mod:`~deepaas_like.containment.namespaces`): a network namespace of its
  own (no network at all, UDP included), a PID namespace (the worker cannot see the
  server's process, and every process it forks dies with it), IPC and mount namespaces.
  As root they are the kernel's; otherwise inside a user namespace of the worker's own,
  where the kernel allows one.
* **A separate user** when the server runs as root (``--sandbox-user``, ``nobody`` by
  default): the worker holds no capability. Directories that user cannot enter on the
  way to the interpreter (Python installed under ``/root``) are covered, in the worker's
  own mount namespace, by an empty directory that shows only what it needs.
* **seccomp** (:mod:`deepaas_like.containment.seccomp`): no ``socket()`` (UNIX sockets named by a path
  are beyond Landlock), no new namespaces.
* **rlimits** (:mod:`~deepaas_like.containment.limits`): memory (``RLIMIT_AS``), processes
  and threads (``RLIMIT_NPROC``), the size of a file it writes, open files, no core dumps;
  its scratch directory is a tmpfs of bounded size.

The worker's process itself is started clean by the server
(:class:`~deepaas_like.engine.interpreter.IsolatedProcess`: a fresh interpreter, a session of its
own, no environment of the server's, no descriptor but its pipes).

:func:`contain` answers a :class:`Containment`: what was applied and what this kernel
could not do. The server serves formats whose loading runs code only from workers that
report ``contained`` (or with ``--allow-unconfined-code``).
"""

from __future__ import annotations

import os
import sys

from . import landlock, seccomp
from .file_channel import FileChannel
from .landlock_rules import MIN_LANDLOCK, apply_landlock, needed_roots
from .limits import limit, scratch_size, tasks_of
from .namespaces import (
    SHM,
    die_with_parent,
    drop_capabilities,
    enter_namespaces,
    fork_behind_init,
    mount_scratch,
    reveal,
    sandbox_user,
)
from .spec import Containment, SandboxError, SandboxSpec

__all__ = ["Containment", "FileChannel", "SandboxError", "SandboxSpec", "contain"]


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
    target = sandbox_user(spec.user) if as_root else None
    in_namespaces = enter_namespaces(as_root, uid, gid, report)
    if in_namespaces:
        if target is not None:
            reveal(needed, *target, report)
        if spec.scratch:  # its files in a tmpfs of bounded size, gone with the namespace
            mount_scratch(spec.scratch, target or (uid, gid), scratch_size(spec))
        fork_behind_init()  # returns in the contained process, pid 2 of the new namespace
    die_with_parent()
    separate_user = False
    if target is not None and in_namespaces:
        os.setgroups([])
        os.setresgid(target[1], target[1], target[1])
        os.setresuid(target[0], target[0], target[0])  # every capability goes with uid 0
        die_with_parent()  # a change of user clears it
        separate_user = True
        report.layers.append(f"user {spec.user} ({target[0]}), no capabilities")
    elif in_namespaces:
        drop_capabilities()
    elif as_root:
        report.missing.append("a separate user (it needs the mount namespace)")
    report.pid = int(os.readlink("/proc/self"))
    if spec.scratch:
        os.environ.update(TMPDIR=spec.scratch, HOME=spec.scratch)
        os.chdir(spec.scratch)
    limit(spec, counted_from=0 if in_namespaces and not as_root else tasks_of(os.getuid()), report=report)
    sys.dont_write_bytecode = True
    applied = apply_landlock(spec, needed, report, shm=SHM if in_namespaces else None)
    filtered = _filter_system_calls(report)
    # Contained: Landlock's files and TCP rules, the namespaces (no network at all, no view of
    # the server, everything it starts dies with it), the system call filter, and no root.
    report.contained = applied >= MIN_LANDLOCK and in_namespaces and filtered and (separate_user or not as_root)
    return report


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
