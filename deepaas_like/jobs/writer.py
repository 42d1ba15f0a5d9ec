"""How a change of one of this server's jobs reaches the store: written now, or kept in the
outbox while the store cannot be reached and written, in order, as soon as it answers
again (see :mod:`.outbox`). When the store has a job ended already, not by this server
(another replica took this one for gone while the store could not hear from it), the
store's word is the job's, here too."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

from ..database import StoreOutage
from .model import Job
from .outbox import VERSION, Outbox, row_of
from .store import JobStore

LOG = logging.getLogger(__name__)
OUTBOX_INTERVAL = 0.5  # seconds between tries to write what waits in the outbox


class JobWriter:
    """Writes this server's jobs to ``store`` through the outbox at ``outbox_path``.

    ``local(job_id)``: the job as this server holds it; ``overruled(job)``: told when the
    store's word replaced a job's status here, so that what still runs of it stops."""

    def __init__(
        self,
        store: JobStore,
        outbox_path: Path,
        local: Callable[[str], Job | None],
        overruled: Callable[[Job], None],
    ) -> None:
        self._store = store
        self._outbox = Outbox(outbox_path)
        self._local = local
        self._overruled = overruled
        self._changes = 0  # changes of jobs made here, in order (see persist)

    async def load(self) -> None:
        """Read back what the last run could not write before it stopped, and write it first."""
        await asyncio.to_thread(self._outbox.load)
        if len(self._outbox):
            LOG.info("writing %d job changes kept while the store was away", len(self._outbox))
            await self.flush()

    async def persist(self, job: Job, *names: str) -> None:
        """Write a change of one of this server's jobs (``names``: the fields that changed; all
        of them if none): now, or, while the store cannot be reached, from the outbox as soon
        as it answers again. Never raises. A job the store has ended already takes the
        store's word (:meth:`follow_store`)."""
        row = JobStore.row(job)
        version = self._changes = self._changes + 1  # writes may end out of order: the latest wins
        if job.id in self._outbox:  # an earlier change waits: this one goes after it, as the whole row
            self._outbox.keep(row, version)
            return
        try:
            written = await self._store.write_unfinished(row, names)
        except StoreOutage:
            self._outbox.keep(row, version)
            return
        self._outbox.drop(job.id, up_to=version)  # an earlier change that failed meanwhile is outdated
        if not written:
            await self.follow_store(job)

    async def save_callback(self, job: Job) -> None:
        """A callback's state (its fields only: never the job's status, which is final)."""
        try:
            await self._store.save(job, "callback_status", "callback_attempts", "callback_error")
        except StoreOutage:
            pass  # the next attempt writes it; one still pending at a restart is delivered then

    async def flush(self) -> None:
        """Write what the outbox holds, in order, while the store takes it."""
        for kept in self._outbox.rows():
            row = {**row_of(kept), "updated": time.time()}  # written now: the other replicas' mirrors look for that
            try:
                written = await self._store.write_unfinished(row)
            except StoreOutage:
                return  # still away: the next round
            self._outbox.drop(row["id"], up_to=kept[VERSION])
            job = self._local(row["id"])
            if written:
                LOG.info("job %s: its %s, kept while the store was away, is written", row["id"], row["status"])
            elif job is not None:
                await self.follow_store(job)

    async def run(self) -> None:
        """Write what waits in the outbox, every :data:`OUTBOX_INTERVAL` (until cancelled)."""
        while True:
            await asyncio.sleep(OUTBOX_INTERVAL)
            if len(self._outbox):
                await self.flush()

    async def follow_store(self, job: Job) -> None:
        """The store has ``job`` ended already, not by this server: the store's status is the
        job's, here too, and the manager stops what still runs of it."""
        try:
            theirs = await self._store.load_one(job.id)
        except StoreOutage:
            return
        if theirs is None or not theirs.is_finished or (job.is_finished and job.status == theirs.status):
            return
        LOG.warning(
            "job %s (%s of %s) is %s in the store (%s); this server had it %s, and follows the store",
            job.id,
            job.kind,
            job.model,
            theirs.status,
            theirs.message,
            job.status,
        )
        for name in Job.persisted_fields():
            setattr(job, name, getattr(theirs, name))
        self._overruled(job)
