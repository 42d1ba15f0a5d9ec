"""The server's own state: one SQLite database in the data directory, one writer thread.

Jobs, and the registry's models and versions, are tables of ``<data-dir>/state.sqlite3``.
Every change is a transaction (WAL journal): a server killed at any moment leaves a
consistent database. All SQL runs on one dedicated thread, so the event loop never
waits on the disk, and writes happen in the order they were asked for.

Opening the database locks the data directory (one server per directory) and brings
the schema up to :data:`SCHEMA_VERSION`, one numbered step at a time; a database
written by a newer server is refused with a clear error::

    db = Database("/var/lib/deepaas_like")
    await db.open()
    rows = await db.run(lambda conn: conn.execute("SELECT id FROM jobs").fetchall())
    await db.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

from .errors import DeepaasError

T = TypeVar("T")
FILENAME = "state.sqlite3"
OLD_FILENAME = "jobs.sqlite3"  # before the registry, the database held only jobs

JOBS_V1 = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER UNIQUE, id TEXT PRIMARY KEY, kind TEXT, model TEXT, args TEXT, status TEXT,
    created REAL, started REAL, finished REAL, result TEXT, result_type TEXT, error_status INTEGER,
    message TEXT, progress REAL, progress_message TEXT, callback_url TEXT, callback_status TEXT,
    callback_attempts INTEGER, callback_error TEXT)"""
REGISTRY_V2 = (
    """CREATE TABLE uploaded_models (
        name TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, last_predict REAL,
        current_version INTEGER, is_public INTEGER NOT NULL DEFAULT 0, description TEXT NOT NULL DEFAULT '',
        owner TEXT, archived REAL)""",
    """CREATE TABLE model_versions (
        model TEXT NOT NULL, number INTEGER NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        library TEXT NOT NULL, filetype TEXT NOT NULL, filename TEXT, created REAL NOT NULL,
        status TEXT NOT NULL, error TEXT, signature TEXT, config TEXT, optimization TEXT,
        PRIMARY KEY (model, number))""",
)
AUTH_V3 = (
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, scopes TEXT NOT NULL, models TEXT,
        user_id TEXT, created REAL NOT NULL, expires REAL, last_used REAL, revoked REAL)""",
    """CREATE TABLE users (
        id TEXT PRIMARY KEY, username TEXT UNIQUE, email TEXT, created REAL NOT NULL)""",
    """CREATE TABLE model_access (
        model TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL, can_share INTEGER NOT NULL,
        PRIMARY KEY (model, user_id))""",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT, action TEXT NOT NULL,
        target TEXT, detail TEXT)""",
    "ALTER TABLE jobs ADD COLUMN owner TEXT",
)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (JOBS_V1,),
    2: REGISTRY_V2,
    3: AUTH_V3,
}
SCHEMA_VERSION = max(MIGRATIONS)
"""Version of the database layout this code writes."""


class DataDirInUse(DeepaasError):
    pass


class StoreTooNew(DeepaasError):
    """The database was written by a newer deepaas_like."""


class Database:
    """``<data-dir>/state.sqlite3``, opened by one server, used from one thread."""

    def __init__(self, data_dir: str | os.PathLike[str], *, exclusive: bool = True) -> None:
        """``exclusive``: lock the data directory (the server); tools that only read or make a
        small change while the server may run (``deepaas-token``) open it shared."""
        self.exclusive = exclusive
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / FILENAME
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepaas-like-db")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._data_version = -1

    # --- life cycle --------------------------------------------------------------

    async def open(self) -> None:
        """Lock the data directory, then create, migrate or open the database."""
        await self._in_thread(self._open)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._unlock()

        await self._in_thread(close)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the database thread; its return value."""
        def call() -> T:
            assert self._conn is not None, "the database is not open"
            return fn(self._conn)

        return await self._in_thread(call)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # --- opening ------------------------------------------------------------------

    def _lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.data_dir} is in use by another deepaas-run (pid {holder}); "
                "give this server its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> None:
        if self.exclusive:
            self._lock()
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._adopt_old_file()
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._unlock()
            raise
        self._conn = conn

    async def changed_elsewhere(self) -> bool:
        """Whether another process committed to the database since the last call."""
        def check(conn: sqlite3.Connection) -> bool:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            changed, self._data_version = version != self._data_version, version
            return changed

        return await self.run(check)

    def _adopt_old_file(self) -> None:
        """A data directory of a server from before the registry: its jobs.sqlite3 becomes ours."""
        old = self.data_dir / OLD_FILENAME
        if old.exists() and not self.path.exists():
            for suffix in ("-wal", "-shm", ""):  # the database file last: it marks the move done
                part = Path(str(old) + suffix)
                if part.exists():
                    os.replace(part, Path(str(self.path) + suffix))

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema up to ``SCHEMA_VERSION``, one step per version, each atomic."""
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"the database {self.path} has schema version {version}, newer than this deepaas_like "
                f"understands ({SCHEMA_VERSION}); run the newer deepaas_like, or give this one another --data-dir"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(step),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def columns_of(conn: sqlite3.Connection, table: str) -> list[str]:
    """The column names of ``table``."""
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def encode_row(values: dict[str, Any]) -> tuple[str, list[Any]]:
    """``"a = ?, b = ?"`` and the values, for an UPDATE of these columns."""
    return ", ".join(f"{name} = ?" for name in values), list(values.values())
