"""The Landlock rules of a contained worker: what it may read (the interpreter, its
packages, a few system files), where it may write (its scratch), and nothing of a denied
path even inside an allowed one."""

from __future__ import annotations

import os
import sys
from typing import Iterable

from . import landlock
from .spec import Containment, SandboxSpec

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
MIN_LANDLOCK = 4  # files and TCP; signals and abstract sockets need 6 or the namespaces


def needed_roots() -> list[str]:
    """What Python and the framework plugins read: the interpreter's prefixes, the import
    paths (and what the links in them lead to: a model environment's runtime, see
    :func:`deepaas_like.isolated.runtime_dir`), deepaas_like itself and the framework
    plugins' packages."""
    from ..frameworks import framework_packages

    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    }  # deepaas_like
    paths.update(p for p in sys.path if p)
    paths.update(linked_packages())
    for where in framework_packages().values():
        paths.add(where if os.path.isdir(where) else os.path.dirname(where))
    return sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})


def linked_packages() -> list[str]:
    """The directories that links on the import path lead to (a model environment's runtime:
    links to deepaas_like, the framework plugins; none elsewhere)."""
    found = []
    for entry in runtime_paths():
        for child in os.scandir(entry):
            if child.is_symlink():
                target = os.path.realpath(child.path)
                found.append(target if os.path.isdir(target) else os.path.dirname(target))
    return found


def runtime_paths() -> list[str]:
    """The directories on the import path that hold links only: the runtime a worker in a
    model's own environment starts with (see :class:`deepaas_like.engine.worker.EnvironmentLaunch`)."""
    found = []
    for entry in sys.path:
        try:
            children = list(os.scandir(entry)) if entry and os.path.isdir(entry) else []
        except OSError:
            continue
        if children and all(child.is_symlink() for child in children):
            found.append(entry)
    return found


def own_environment() -> list[str]:
    """What a worker in a model's own environment runs from: its virtual environment and its
    runtime. The environments live in the data directory (a denied path): these, and only
    these, are read there."""
    venv = [sys.prefix] if sys.prefix != sys.base_prefix else []
    return sorted({os.path.realpath(p) for p in [*venv, *runtime_paths()]})


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another of them."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(_inside(path, other) for other in kept):
            kept.append(path)
    return kept


def apply_landlock(spec: SandboxSpec, needed: list[str], report: Containment, shm: str | None) -> int:
    """Apply the Landlock rules (``shm``: a private shared-memory directory it may write in);
    the ABI they were applied with (0: none)."""
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
        own = own_environment()
        for path in outermost(os.path.realpath(p) for p in reads if os.path.lexists(p)):
            if any(_inside(path, d) and not (path != d and any(_inside(path, o) for o in own)) for d in deny):
                skipped.append(path)
                continue
            _allow_except(ruleset, path, landlock.READ, [d for d in deny if _inside(d, path)])
        for device in DEVICES:
            ruleset.allow(device, landlock.READ_FILE | landlock.WRITE_FILE | landlock.IOCTL_DEV)
        if spec.scratch:
            ruleset.allow(spec.scratch, landlock.ALL_FS)
        if shm is not None:
            ruleset.allow(shm, landlock.ALL_FS)
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
