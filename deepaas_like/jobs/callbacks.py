"""Completion callbacks: POST a finished job's document to the URL the client gave.

Delivery is retried with doubling waits; every attempt is recorded on the job (and
so in the store), and a delivery still pending when the server stops is resumed when
it starts again. A failed delivery never changes the job's own status.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any, Awaitable, Callable

import aiohttp

from ..errors import ArgumentError
from .model import Job

LOG = logging.getLogger(__name__)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
ATTEMPT_TIMEOUT = 10.0


def check_callback_url(url: str) -> str:
    """A usable http(s) URL, or a 422 that says why not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArgumentError(
            f"callback_url must be an http:// or https:// URL, got {url!r}",
            {"callback_url": ["Must be an http:// or https:// URL."]},
        )
    return url


class CallbackSender:
    def __init__(
        self,
        attempts: int,
        backoff: float,
        document: Callable[[Job], dict[str, Any]],
        save: Callable[[Job], Awaitable[None]],
    ) -> None:
        self._attempts = attempts
        self._backoff = backoff
        self._document = document
        self._save = save
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def schedule(self, job: Job) -> None:
        if not job.callback_url or job.callback_status != PENDING:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(job), name=f"callback {job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job: Job) -> None:
        url = job.callback_url
        if url is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT))
        while job.callback_attempts < self._attempts:
            if job.callback_attempts:
                await asyncio.sleep(self._backoff * 2 ** (job.callback_attempts - 1))
            job.callback_attempts += 1
            try:
                async with self._session.post(url, json=self._document(job)) as response:
                    if 200 <= response.status < 300:
                        job.callback_status, job.callback_error = DELIVERED, None
                        await self._save(job)
                        LOG.info("job %s: callback delivered to %s", job.id, job.callback_url)
                        return
                    job.callback_error = f"HTTP {response.status} from {job.callback_url}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                job.callback_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            await self._save(job)
            LOG.warning(
                "job %s: callback attempt %d/%d failed: %s",
                job.id,
                job.callback_attempts,
                self._attempts,
                job.callback_error,
            )
        job.callback_status = FAILED
        await self._save(job)

    async def close(self) -> None:
        """Stop delivering (pending deliveries resume at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
