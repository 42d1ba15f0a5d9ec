"""What to contain a worker with (:class:`SandboxSpec`), and what was contained (:class:`Containment`)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """What :func:`~deepaas_like.containment.sandbox.contain` applied (``layers``) and could not (``missing``)."""

    layers: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    landlock_abi: int = 0
    contained: bool = False  # Landlock's files and TCP rules, signals kept in, no root
    pid: int = 0  # the worker's process id as the server sees it

    def summary(self) -> str:
        text = "; ".join(self.layers) or "nothing"
        return text + (f" (not available: {'; '.join(self.missing)})" if self.missing else "")

    def to_json(self) -> dict[str, object]:
        return {
            "layers": list(self.layers),
            "missing": list(self.missing),
            "landlock_abi": self.landlock_abi,
            "contained": self.contained,
        }
