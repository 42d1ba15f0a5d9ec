"""Virtual environments for models whose requirements conflict with the server's, built with uv.

An environment is named by what it contains: the SHA-256 of the Python version and of the
resolved lock (``uv pip compile``'s pins). Two models with the same requirements, however
spelled or ordered, share one environment, built once; asking again costs a resolution
(a fraction of a second from uv's cache), never a build::

    store = EnvironmentStore(Path("/data/environments"))
    env = store.build(["scikit-learn==1.3.2", "numpy<2"], log=print)
    subprocess.run([env.python, "-c", "import sklearn"])
    store.collect(in_use={env.key})        # removes every other environment

Layout under the root: ``<key>/`` (a relocatable venv, with ``env.json`` and, written last,
the marker ``.complete``), ``.uv-cache/`` (uv's cache, on the same file system so that
installs are hard links), ``.locks/<key>.lock`` (one builder per key, across processes),
and while a build runs ``.build-<key>-*/``, renamed into place only when complete, so that
a reader never sees half an environment and a failed build leaves nothing behind.
"""

from __future__ import annotations

import builtins
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .requirements import normalise_requirements
from .uv_commands import UvMissing, error_summary, failed_requirement, run_uv

RECORD = "env.json"
MARKER = ".complete"
BUILD_PREFIX = ".build-"
TRASH_PREFIX = ".trash-"
STALE_BUILD_AGE = 3600.0  # a build directory this old, whose builder is gone, is removed by collect()
_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Environment:
    """One built environment: run a model with ``env.python``."""

    key: str  # hex SHA-256 of the Python version and the lock: the directory's name
    path: Path  # the venv's root: <root>/<key>
    requirements: tuple[str, ...]  # as asked (normalised, sorted)
    lock: str  # the resolved pins, one "name==version" a line
    python_version: str  # "3.11"
    created: float
    size: int  # bytes on disk

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def record(self) -> dict[str, Any]:
        """What ``env.json`` holds (everything but the path, which is where it lies)."""
        fields = dataclasses.asdict(self)
        del fields["path"]
        fields["requirements"] = list(self.requirements)
        return fields

    @classmethod
    def read(cls, path: Path) -> Environment | None:
        """The environment at ``path``, or None when it is not a complete one."""
        try:
            if not (path / MARKER).is_file():
                return None
            fields = json.loads((path / RECORD).read_text(encoding="utf-8"))
            return cls(path=path, **{**fields, "requirements": tuple(fields["requirements"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None


class BuildFailed(Exception):
    """An environment could not be built: ``message`` says what failed, ``requirement`` which
    requirement uv could not resolve or install (None when its output does not tell), ``log``
    what uv printed."""

    def __init__(self, message: str, *, requirement: str | None = None, log: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.requirement = requirement
        self.log = log


def environment_key(python_version: str, lock: str) -> str:
    """The name of the environment that ``lock`` installed into Python ``python_version`` gives."""
    return hashlib.sha256(f"python {python_version}\n{lock}".encode()).hexdigest()


def lock_text(compiled: str) -> str:
    """``uv pip compile``'s output as a lock: its pins, one a line, sorted, without comments."""
    pins = {line.strip() for line in compiled.splitlines()}
    return "".join(f"{pin}\n" for pin in sorted(pins) if pin and not pin.startswith("#"))


class EnvironmentStore:
    """The environments under ``root``, made with the interpreter ``python`` (default: the
    server's), from ``index_url`` (default: uv's, or $UV_INDEX_URL), with uv's cache in
    ``cache_dir`` (default: ``<root>/.uv-cache``; a benchmark may share one between roots)."""

    def __init__(
        self,
        root: Path,
        *,
        python: str | None = None,
        index_url: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.python = python or sys.executable
        self.index_url = index_url
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".uv-cache"

    @cached_property
    def python_version(self) -> str:
        """The ``major.minor`` version of the interpreter environments are made with."""
        if self.python == sys.executable:
            return f"{sys.version_info[0]}.{sys.version_info[1]}"
        try:
            answer = subprocess.run(
                [self.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BuildFailed(f"no Python interpreter runs as {self.python!r} ({exc}): give the path of one") from exc
        return answer.stdout.strip()

    def build(self, requirements: Sequence[str], *, log: Callable[[str], None] | None = None) -> Environment:
        """The environment with ``requirements``: found when one with the same lock exists,
        else built (blocking: seconds to minutes). Each line uv prints goes to ``log``.

        Raises ValueError for a malformed requirement, BuildFailed when uv fails (nothing of
        the build is left behind).
        """
        asked = normalise_requirements(requirements)
        say = log or _ignore
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self._resolve(asked, say)
        key = environment_key(self.python_version, lock)
        found = self._found(key)
        if found is not None:
            say(f"environment {key[:12]} exists: no build needed")
            return found
        with self._key_lock(key):
            found = self._found(key)  # built by another process while this one waited
            if found is not None:
                say(f"environment {key[:12]} was built meanwhile: no build needed")
                return found
            return self._build(key, asked, lock, say)

    def get(self, key: str) -> Environment | None:
        """The complete environment ``key`` (a full key), or None."""
        return Environment.read(self.root / key) if _KEY.fullmatch(key) else None

    def list(self) -> list[Environment]:
        """The complete environments, oldest first."""
        if not self.root.is_dir():
            return []
        found = [self.get(entry.name) for entry in self.root.iterdir()]
        return sorted((env for env in found if env is not None), key=lambda env: (env.created, env.key))

    def remove(self, key: str) -> None:
        """Remove environment ``key``; one that does not exist is already removed."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not an environment key: {key!r} (64 hexadecimal digits; deepaas-env list shows them)")
        path = self.root / key
        if not path.exists():
            return
        with self._key_lock(key):
            self._discard(path)

    def collect(self, in_use: set[str], *, grace: float = 0.0) -> builtins.list[str]:
        """Remove every complete environment not in ``in_use`` (and not built or found in the
        last ``grace`` seconds: a model may be about to record that it uses it), and build
        directories that no builder holds and that are older than an hour. Returns the keys
        removed."""
        now = time.time()
        removed = []
        for env in self.list():
            if env.key not in in_use and now - _last_used(env.path) >= grace:
                self.remove(env.key)
                removed.append(env.key)
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            if entry.name.startswith(TRASH_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(BUILD_PREFIX) and now - _mtime(entry) > STALE_BUILD_AGE:
                key = entry.name[len(BUILD_PREFIX) :].split("-")[0]
                with self._key_lock(key, wait=False) as held:
                    if held:  # else its builder is still at work
                        shutil.rmtree(entry, ignore_errors=True)
        return removed

    def _found(self, key: str) -> Environment | None:
        env = self.get(key)
        if env is not None:
            try:
                os.utime(env.path / MARKER)  # last used: collect(grace=...) spares it
            except OSError:
                pass
        return env

    def _uv_options(self, *, index: bool) -> builtins.list[str]:
        options = ["--no-config", "--color", "never", "--cache-dir", str(self.cache_dir)]
        if index and self.index_url:
            options += ["--index-url", self.index_url]
        return options

    def _uv(self, args: Sequence[str], say: Callable[[str], None]) -> tuple[int, str]:
        try:
            return run_uv(args, log=say, cwd=self.root)
        except (UvMissing, OSError) as exc:
            raise BuildFailed(str(exc)) from exc

    def _resolve(self, asked: tuple[str, ...], say: Callable[[str], None]) -> str:
        """The lock of ``asked`` for this Python: ``uv pip compile``'s pins."""
        with tempfile.TemporaryDirectory(prefix="deepaas-env-") as work:
            wanted, pins = Path(work) / "requirements.in", Path(work) / "requirements.lock"
            wanted.write_text("".join(f"{line}\n" for line in asked), encoding="utf-8")
            status, output = self._uv(
                ["pip", "compile", str(wanted), "-o", str(pins), "--python", self.python, "--no-header"]
                + ["--no-annotate", *self._uv_options(index=True)],
                say,
            )
            if status != 0:
                raise self._failed("resolve", output, asked)
            return lock_text(pins.read_text(encoding="utf-8"))

    def _build(self, key: str, asked: tuple[str, ...], lock: str, say: Callable[[str], None]) -> Environment:
        """Build environment ``key`` aside, then rename it into place (the key's lock held)."""
        work = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{key}-", dir=self.root))
        try:
            venv, pins = work / "venv", work / "requirements.lock"
            pins.write_text(lock, encoding="utf-8")
            status, output = self._uv(
                ["venv", "--python", self.python, "--relocatable", *self._uv_options(index=False), str(venv)], say
            )
            if status != 0:
                raise BuildFailed(
                    f"could not create a virtual environment with {self.python}: {error_summary(output)}", log=output
                )
            status, output = self._uv(
                ["pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(pins)]
                + self._uv_options(index=True),
                say,
            )
            if status != 0:
                raise self._failed("install", output, asked)
            env = Environment(
                key=key,
                path=self.root / key,
                requirements=asked,
                lock=lock,
                python_version=self.python_version,
                created=time.time(),
                size=_disk_size(venv),
            )
            (venv / RECORD).write_text(json.dumps(env.record(), indent=2) + "\n", encoding="utf-8")
            (venv / MARKER).touch()
            if env.path.exists():  # an incomplete one, left by a crash: this build replaces it
                self._discard(env.path)
            os.rename(venv, env.path)
            say(f"environment {key[:12]} built: {env.size / 2**20:.1f} MiB")
            return env
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _failed(self, step: str, output: str, asked: tuple[str, ...]) -> BuildFailed:
        """What uv's failed ``step`` (resolve, install) says, and what to do about it."""
        requirement = failed_requirement(output, asked)
        advice = (
            f"Change or relax {requirement}, or check that the package index has it"
            if requirement
            else "Check that the package index is reachable and has them"
        )
        return BuildFailed(
            f"could not {step} {requirement or 'the requirements'} for Python {self.python_version}: "
            f"{error_summary(output)}. {advice}",
            requirement=requirement,
            log=output,
        )

    def _discard(self, path: Path) -> None:
        """Remove ``path`` by renaming it out of sight first: no reader sees it half removed."""
        trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=self.root))
        os.rename(path, trash / path.name)
        shutil.rmtree(trash, ignore_errors=True)

    @contextmanager
    def _key_lock(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        """Hold the lock of ``key`` (across processes); without ``wait``, yield False when
        another holds it."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _ignore(line: str) -> None:
    pass


def _last_used(path: Path) -> float:
    return _mtime(path / MARKER)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _disk_size(path: Path) -> int:
    """Bytes of the files under ``path``, each file once (uv hard-links files from its cache)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total
