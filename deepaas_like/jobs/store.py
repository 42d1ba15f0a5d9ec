"""SQLite storage of jobs, in the data directory, written from one thread.

Every change is a transaction (WAL journal): a server killed at any moment leaves a
consistent database, holding each job as of its last completed write. All SQL runs on
one dedicated thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import DeepaasError
from .model import Job, JobKind, JobStatus

SCHEMA_VERSION = 1
"""Version of the database layout this code writes. A database of a newer version is
refused (a newer server wrote it); an older one is migrated on open (see ``_migrate``)."""
PERSISTED = Job.persisted_fields()
JSON_COLUMNS = {"args", "result"}
COLUMN_TYPES = {
    "id": "TEXT PRIMARY KEY", "created": "REAL", "started": "REAL", "finished": "REAL", "progress": "REAL",
    "error_status": "INTEGER", "callback_attempts": "INTEGER",
}


class DataDirInUse(DeepaasError):
    pass


class StoreTooNew(DeepaasError):
    """The job database was written by a newer deepaas_like."""


class JobStore:
    """The jobs table of ``<data-dir>/jobs.sqlite3``; open() also locks the directory."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "jobs.sqlite3"
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepaas-like-jobs")
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # --- life cycle --------------------------------------------------------------

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

    def _open(self) -> list[Job]:
        self._lock()
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._migrate(db)
        except BaseException:
            db.close()
            self._unlock()
            raise
        self._db = db
        rows = db.execute(f"SELECT {', '.join(PERSISTED)} FROM jobs ORDER BY seq").fetchall()
        return [self._job(row) for row in rows]

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the tables, or bring an older database up to ``SCHEMA_VERSION``."""
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"the job database {self.path} has schema version {version}, newer than this deepaas_like "
                f"understands ({SCHEMA_VERSION}); run the newer deepaas_like, or give this one another --data-dir"
            )
        if version == SCHEMA_VERSION:
            return
        # Version 0 is an empty data directory; later versions add their steps here.
        columns = ", ".join(f"{name} {COLUMN_TYPES.get(name, 'TEXT')}" for name in PERSISTED)
        db.execute("BEGIN")
        db.execute(f"CREATE TABLE IF NOT EXISTS jobs (seq INTEGER UNIQUE, {columns})")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")

    async def open(self) -> list[Job]:
        """Lock the data directory, create or open the database, return every job."""
        return await self._run(self._open)

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._unlock()

        await self._run(close)
        self._executor.shutdown(wait=True)

    # --- rows --------------------------------------------------------------------

    @staticmethod
    def _encode(name: str, value: Any) -> Any:
        if name in JSON_COLUMNS:
            return json.dumps(value)
        return value

    @staticmethod
    def _job(row: tuple) -> Job:
        values = dict(zip(PERSISTED, row, strict=True))
        for name in JSON_COLUMNS:
            values[name] = json.loads(values[name]) if values[name] is not None else None
        for name in ("created", "started", "finished", "progress"):
            values[name] = float(values[name]) if values[name] is not None else None
        for name in ("callback_attempts", "error_status"):
            values[name] = int(values[name]) if values[name] is not None else None
        values["callback_attempts"] = values["callback_attempts"] or 0
        values["kind"], values["status"] = JobKind(values["kind"]), JobStatus(values["status"])
        return Job(**values)

    def _insert(self, job: Job) -> None:
        assert self._db is not None
        names = ", ".join(PERSISTED)
        marks = ", ".join("?" for _ in PERSISTED)
        self._db.execute(
            f"INSERT INTO jobs (seq, {names}) VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), {marks})",
            [self._encode(n, getattr(job, n)) for n in PERSISTED],
        )

    def _update(self, job_id: str, values: dict[str, Any]) -> None:
        assert self._db is not None
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?",
                         [*(self._encode(n, v) for n, v in values.items()), job_id])

    def _delete(self, job_ids: list[str]) -> None:
        assert self._db is not None
        self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def insert(self, job: Job) -> None:
        await self._run(self._insert, job)

    async def save(self, job: Job, *names: str) -> None:
        """Write the named fields of ``job`` (all persisted fields if none are named)."""
        await self._run(self._update, job.id, {n: getattr(job, n) for n in (names or PERSISTED)})

    async def delete(self, job_ids: list[str]) -> None:
        await self._run(self._delete, job_ids)
