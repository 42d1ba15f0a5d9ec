"""The resource limits of a contained worker: memory, processes and threads, the size of
a file it writes (and of its scratch), open files, no core dumps."""

from __future__ import annotations

import os
import resource
import signal

from .spec import Containment, SandboxSpec


def limit(spec: SandboxSpec, counted_from: int, report: Containment) -> None:
    """Lower this process's rlimits as ``spec`` says (``counted_from``: the tasks its user
    has already, which RLIMIT_NPROC counts too)."""

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


def tasks_of(uid: int) -> int:
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


def scratch_size(spec: SandboxSpec) -> int:
    """The bytes of the worker's scratch tmpfs: one file of the largest size, and some room."""
    return (spec.file_size or 1024 * 1024 * 1024) + 64 * 1024 * 1024
