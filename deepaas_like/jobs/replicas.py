"""Jobs on a store that several replicas share (PostgreSQL): who runs what, and what
becomes of the jobs of a replica that died.

Each server runs the jobs submitted to it, so each job runs exactly once, and keeps a
heartbeat on them (its lease). It mirrors the others' jobs, so that their status, log
and cancel work from any replica:

* every :data:`SYNC_INTERVAL`: the jobs written since the last look (with a margin for
  clocks that differ) are read; the others' jobs replace this server's copies of them,
  and its own are checked for a cancel request made on another replica;
* every lease / 3: a heartbeat on its own unfinished jobs; the new bytes of their logs
  are shipped to the store (``job_logs``) for the others to serve;
* every lease / 2: unfinished jobs of others whose heartbeat is older than the lease
  become ``interrupted``; the write happens only if the job is still unfinished and
  has no newer heartbeat, so one replica wins.

A replica judges others only once it has itself reached the store without a break for a
whole lease: after an outage of the store, every replica that runs jobs renews its
heartbeats in its first round with the store back, so a replica whose heartbeat could not
be written because the *store* was away is never taken for gone (the same holds for a
replica that starts: it judges nobody in its first lease). A status that was final in the
store never changes (every write of a job's status is conditional on the store having it
unfinished); a replica that finds its job ended by another (it was cut off from the store
for longer than a lease while the others were not) follows the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Protocol

from ..database import StoreOutage
from .model import Job, JobKind, JobStatus
from .store import JobStore

LOG = logging.getLogger(__name__)
SYNC_INTERVAL = 0.5
CLOCK_MARGIN = 10.0  # seconds: rows are read again this far back, for clocks that differ between hosts
LOG_CHUNK = 1 << 20


class JobsHere(Protocol):
    """What the replica side asks of the jobs this server holds (a
    :class:`~deepaas_like.jobs.manager.JobManager`)."""

    def local(self, job_id: str) -> Job | None: ...

    def own_unfinished(self) -> list[Job]: ...

    def mirror(self, row: Job) -> None: ...

    def ended_elsewhere(self, job: Job) -> None: ...

    def log_path(self, job: Job) -> Path: ...

    async def follow_store(self, job: Job) -> None: ...

    async def cancel(self, kind: JobKind, model: str, job_id: str) -> Job: ...


class Replicas:
    """The replica side of a :class:`~deepaas_like.jobs.manager.JobManager` on a shared store."""

    def __init__(self, manager: JobsHere, store: JobStore, node: str, lease: float) -> None:
        self._manager = manager
        self._store = store
        self.node = node
        self.lease = lease
        self._shipped: dict[str, int] = {}  # job id -> bytes of its log already in the store
        self._since = 0.0
        self._connected_since: float | None = time.monotonic()  # since when the store answered without a break

    def stale_message(self, job: Job) -> str:
        return (
            f"the replica running it ({job.node or 'unknown'}) stopped answering: no heartbeat for "
            f"{self.lease:g} s (crash, kill or lost connection) while the job was {job.status}"
        )

    async def adopt(self, jobs: list[Job]) -> list[Job]:
        """At start: the other replicas' jobs are mirrored; whether their replica is gone is
        judged by the sweep, once this one has reached the store for a whole lease (it may
        be starting right after an outage of the store, before the others renewed their
        heartbeats). The jobs this call ended: none."""
        self._since = time.time() - CLOCK_MARGIN
        self._connected_since = time.monotonic()
        return []

    async def _end_stale(self, job: Job, before: float) -> bool:
        was = job.status
        job.message = self.stale_message(job)
        job.status, job.finished = JobStatus.INTERRUPTED, time.time()
        if await self._store.end_if(job, unless_beat_since=before):
            LOG.warning("job %s (%s of %s) %s", job.id, job.kind, job.model, job.message)
            return True
        job.status, job.finished = was, None  # another replica ended it, or its server is back: the sync says
        return False

    async def run(self) -> None:
        beat = sweep = 0.0
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                now = time.monotonic()
                await self.sync()
                if self._connected_since is None:  # the store answers again: heartbeats first
                    self._connected_since, beat = now, 0.0
                if now - beat >= self.lease / 3:
                    await self._store.heartbeat(self.node, time.time())
                    beat = now
                    await self.ship_logs()
                if now - sweep >= self.lease / 2 and now - self._connected_since >= self.lease:
                    sweep = now
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except StoreOutage:  # logged once by the store; judged nobody meanwhile, and not for a lease after
                self._connected_since = None
            except Exception:  # the next round tries again
                self._connected_since = None
                LOG.exception("keeping jobs in step with the other replicas failed")

    async def sync(self) -> None:
        """Take in the jobs written since the last look."""
        started = time.time()
        rows = await self._store.changed_since(self._since)
        self._since = started - CLOCK_MARGIN
        for row in rows:
            if row.node == self.node:
                mine = self._manager.local(row.id)
                if mine is None or mine.is_finished:
                    continue
                if row.is_finished:  # ended by another replica while this one could not reach the store
                    await self._manager.follow_store(mine)
                elif row.cancel_requested:
                    LOG.info("job %s: cancel requested on another replica", row.id)
                    await self._manager.cancel(mine.kind, mine.model, mine.id)
            else:
                self._manager.mirror(row)

    async def sweep(self) -> None:
        """Interrupt the unfinished jobs of replicas whose lease ran out."""
        before = time.time() - self.lease
        for job in await self._store.stale(before, self.node):
            if await self._end_stale(job, before):
                self._manager.mirror(job)
                self._manager.ended_elsewhere(job)

    async def ship_logs(self, only: Job | None = None) -> None:
        """Send the new bytes of this server's unfinished jobs' logs (or of ``only``) to the store."""
        for job in [only] if only is not None else self._manager.own_unfinished():
            path = self._manager.log_path(job)
            offset = self._shipped.get(job.id, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = await asyncio.to_thread(fh.read, LOG_CHUNK)
            except FileNotFoundError:
                continue
            while data:
                await self._store.append_log(job.id, offset, data)
                offset += len(data)
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(LOG_CHUNK)
            self._shipped[job.id] = offset
        if only is not None:
            self._shipped.pop(only.id, None)
