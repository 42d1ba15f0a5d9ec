"""Waiting for a job's document to reach a state, in tests of a live app."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable


async def wait_for(client: Any, url: str, until: Callable[[dict], bool], timeout: float = 60.0) -> dict:
    """GET ``url`` until ``until(body)`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        body = await (await client.get(url)).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting on {url}: {body}"
        await asyncio.sleep(0.05)


def finished(body: dict) -> bool:
    return body["status"] not in ("queued", "running")
