"""Waiting for a served app, and reading the store behind it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


def store_rows(data_dir: Path, store: str, sql: str) -> list[tuple]:
    """The rows of a query on a test's store, read the way another program would."""
    import sqlalchemy as sa

    url = store.replace("postgresql://", "postgresql+psycopg://", 1) if store else f"sqlite:///{data_dir}/state.sqlite3"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


async def wait_ready(client, timeout: float = 60.0, base_path: str = "") -> dict:
    """Poll readiness until every model is warm; fail fast if one could not start."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"{base_path}/v2/health/ready")
        body = await response.json()
        if response.status == 200:
            return body
        failed = {n: m for n, m in body["models"].items() if m["state"] == "failed"}
        if failed:
            raise AssertionError(f"models failed to start: {failed}")
        if time.monotonic() > deadline:
            raise AssertionError(f"models not ready after {timeout}s: {body}")
        await asyncio.sleep(0.05)
