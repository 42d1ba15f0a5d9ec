"""The jobs table of the server's database (see :mod:`deepaas_like.database`).

Each job is written when it is created and whenever its status changes, as of its last
completed write; a restart reads them all back.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..database import Database, columns_of, encode_row
from .model import Job, JobKind, JobStatus

PERSISTED = Job.persisted_fields()
JSON_COLUMNS = {"args", "result"}


class JobStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def path(self) -> str:
        return str(self._db.path)

    async def load(self) -> list[Job]:
        """Every job, oldest first."""
        def load(conn: sqlite3.Connection) -> list[Job]:
            missing = set(PERSISTED) - set(columns_of(conn, "jobs"))
            assert not missing, f"the jobs table lacks {missing}: a migration step is missing"
            rows = conn.execute(f"SELECT {', '.join(PERSISTED)} FROM jobs ORDER BY seq").fetchall()
            return [self._job(row) for row in rows]

        return await self._db.run(load)

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
        values["callback_attempts"] = values["callback_attempts"] or 0
        values["kind"], values["status"] = JobKind(values["kind"]), JobStatus(values["status"])
        return Job(**values)

    async def insert(self, job: Job) -> None:
        names = ", ".join(PERSISTED)
        marks = ", ".join("?" for _ in PERSISTED)
        values = [self._encode(n, getattr(job, n)) for n in PERSISTED]
        await self._db.run(lambda conn: conn.execute(
            f"INSERT INTO jobs (seq, {names}) VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), {marks})",
            values))

    async def save(self, job: Job, *names: str) -> None:
        """Write the named fields of ``job`` (all persisted fields if none are named)."""
        assignments, values = encode_row({n: self._encode(n, getattr(job, n)) for n in (names or PERSISTED)})
        await self._db.run(lambda conn: conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ?", [*values, job.id]))

    async def delete(self, job_ids: list[str]) -> None:
        await self._db.run(lambda conn: conn.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids]))
