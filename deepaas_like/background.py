"""Tasks a component starts and does not await: kept, so that it can cancel them, and
their failures logged, so that none ends as "Task exception was never retrieved"::

    background = Background("registry")
    background.spawn(save(model))      # runs on; a failure is logged with its cause
    await background.cancel_all()      # at shutdown
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

from .database import StoreOutage

LOG = logging.getLogger(__name__)


class Background:
    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task] = set()

    def __iter__(self):
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, StoreOutage):  # an outage is logged once, by the store
            LOG.error("%s: a background task failed", self._owner, exc_info=exc)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
