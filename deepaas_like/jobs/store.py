"""The jobs table of the server's store (see :mod:`deepaas_like.database`).

Each job is written when it is created and whenever its status changes, as of its last
completed write; a restart reads them all back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from ..database import Database, insert_for
from ..tables import job_logs, jobs
from .model import Job, JobKind, JobStatus

PERSISTED = Job.persisted_fields()
# What the replica running a job writes of it in one go: not the fields others write (a
# cancel request), nor its heartbeat, which only JobStore.heartbeat writes (an older copy
# written back would make a live replica look gone).
OWN_FIELDS = tuple(n for n in PERSISTED if n not in ("id", "node", "heartbeat", "cancel_requested"))
JSON_COLUMNS = {"args", "result"}
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
INSERT_ATTEMPTS = 20  # a job's seq (its place in lists) is the next free one: replicas may race for it


class JobStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def path(self) -> str:
        return str(self._db)

    async def load(self) -> list[Job]:
        """Every job, oldest first."""
        query = sa.select(*(jobs.c[name] for name in PERSISTED)).order_by(jobs.c.seq)
        return await self._db.run(lambda conn: [self._job(row) for row in conn.execute(query)])

    @staticmethod
    def _encode(name: str, value: Any) -> Any:
        if name in JSON_COLUMNS:
            return json.dumps(value)
        return value

    @staticmethod
    def _job(row: sa.Row) -> Job:
        values = dict(zip(PERSISTED, row, strict=True))
        for name in JSON_COLUMNS:
            values[name] = json.loads(values[name]) if values[name] is not None else None
        values["callback_attempts"] = values["callback_attempts"] or 0
        values["kind"], values["status"] = JobKind(values["kind"]), JobStatus(values["status"])
        return Job(**values)

    async def insert(self, job: Job) -> None:
        next_seq = sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0) + 1).scalar_subquery()
        job.updated = time.time()
        values = {n: self._encode(n, getattr(job, n)) for n in PERSISTED}
        for attempt in range(INSERT_ATTEMPTS):
            try:
                await self._db.run(lambda conn: conn.execute(sa.insert(jobs).values(seq=next_seq, **values)))
                return
            except sa.exc.IntegrityError:  # another replica took the same seq at the same moment
                if attempt == INSERT_ATTEMPTS - 1:
                    raise

    async def save(self, job: Job, *names: str) -> None:
        """Write the named fields of ``job`` (all persisted fields if none are named)."""
        job.updated = time.time()
        values = {n: self._encode(n, getattr(job, n)) for n in (*(names or PERSISTED), "updated")}
        await self._db.run(lambda conn: conn.execute(sa.update(jobs).where(jobs.c.id == job.id).values(values)))

    @classmethod
    def row(cls, job: Job) -> dict[str, Any]:
        """``job`` as its row is written (plain JSON values: what the outbox keeps)."""
        job.updated = time.time()
        return {n: cls._encode(n, getattr(job, n)) for n in PERSISTED}

    async def write_unfinished(self, row: dict[str, Any], names: tuple[str, ...] = ()) -> bool:
        """Write a job's row (or the ``names`` of it) if the store still has the job queued or
        running: a final status, once written, never changes. Whether it was written (the same
        final status written twice: the second answers False, and the store's is the same)."""
        values = {n: row[n] for n in (*(names or OWN_FIELDS), "updated")}
        return await self._db.run(
            lambda conn: (
                conn.execute(
                    sa.update(jobs).where(jobs.c.id == row["id"], jobs.c.status.in_(UNFINISHED)).values(values)
                ).rowcount
                == 1
            )
        )

    async def load_one(self, job_id: str) -> Job | None:
        """The job as the store has it now (None: no such job)."""
        query = sa.select(*(jobs.c[name] for name in PERSISTED)).where(jobs.c.id == job_id)
        return await self._db.run(lambda conn: next((self._job(row) for row in conn.execute(query)), None))

    async def delete(self, job_ids: list[str]) -> None:
        def delete(conn: sa.Connection) -> None:
            conn.execute(sa.delete(jobs).where(jobs.c.id.in_(job_ids)))
            conn.execute(sa.delete(job_logs).where(job_logs.c.job_id.in_(job_ids)))

        await self._db.run(delete)

    # --- replicas on one store (see deepaas_like.jobs.replicas) --------------------------

    async def changed_since(self, since: float) -> list[Job]:
        """Jobs written at or after ``since`` (by this server's clock or another's)."""
        query = sa.select(*(jobs.c[name] for name in PERSISTED)).where(jobs.c.updated >= since).order_by(jobs.c.seq)
        return await self._db.run(lambda conn: [self._job(row) for row in conn.execute(query)])

    async def heartbeat(self, node: str, now: float) -> None:
        """This server still runs its unfinished jobs."""
        await self._db.run(
            lambda conn: conn.execute(
                sa.update(jobs).where(jobs.c.node == node, jobs.c.status.in_(UNFINISHED)).values(heartbeat=now)
            )
        )

    async def stale(self, before: float, node: str) -> list[Job]:
        """Unfinished jobs of other servers whose last heartbeat is older than ``before``."""
        query = sa.select(*(jobs.c[name] for name in PERSISTED)).where(
            jobs.c.status.in_(UNFINISHED),
            sa.or_(jobs.c.node.is_(None), jobs.c.node != node),
            sa.or_(jobs.c.heartbeat.is_(None), jobs.c.heartbeat < before),
        )
        return await self._db.run(lambda conn: [self._job(row) for row in conn.execute(query)])

    async def end_if(self, job: Job, *, unless_beat_since: float | None = None) -> bool:
        """Write ``job`` (ended) only if the store still has it unfinished (and, with
        ``unless_beat_since``, without a heartbeat since then): whether this call ended it.
        One replica wins, however many try."""
        job.updated = time.time()
        values = {n: self._encode(n, getattr(job, n)) for n in PERSISTED}
        condition = [jobs.c.id == job.id, jobs.c.status.in_(UNFINISHED)]
        if unless_beat_since is not None:
            condition.append(sa.or_(jobs.c.heartbeat.is_(None), jobs.c.heartbeat < unless_beat_since))
        return await self._db.run(
            lambda conn: conn.execute(sa.update(jobs).where(*condition).values(values)).rowcount == 1
        )

    async def request_cancel(self, job_id: str) -> bool:
        """Ask the replica that runs an unfinished job to cancel it; whether it was unfinished."""
        return await self._db.run(
            lambda conn: (
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status.in_(UNFINISHED))
                    .values(cancel_requested=1, updated=time.time())
                ).rowcount
                == 1
            )
        )

    async def append_log(self, job_id: str, offset: int, data: bytes) -> None:
        """Ship a piece of a log (again, after a write the store may or may not have taken: the
        piece it has stays)."""

        def append(conn: sa.Connection) -> None:
            insert = insert_for(conn)(job_logs).values(job_id=job_id, offset=offset, data=data)
            conn.execute(insert.on_conflict_do_nothing(index_elements=[job_logs.c.job_id, job_logs.c.offset]))

        await self._db.run(append)

    async def read_log(self, job_id: str, offset: int = 0) -> bytes:
        """The shipped log of a job from byte ``offset`` on."""

        def read(conn: sa.Connection) -> bytes:
            rows = conn.execute(
                sa.select(job_logs.c.offset, job_logs.c.data)
                .where(job_logs.c.job_id == job_id)
                .order_by(job_logs.c.offset)
            ).all()
            return b"".join(
                rows_data[max(0, offset - start) :] for start, rows_data in rows if start + len(rows_data) > offset
            )

        return await self._db.run(read)
