"""What the store does for each kind of work: the figures of docs/scale-out.md's capacity model.

    .venv/bin/python benchmarks/store_load.py            # SQLite and a throwaway PostgreSQL
    .venv/bin/python benchmarks/store_load.py --json out.json

One real server per store, in this process (echobench, ``--executor thread``, ``--auth``
with a models:predict/train token), on 127.0.0.1. Every SQL statement the store runs is
counted (SQLAlchemy's ``before_cursor_execute``) with every transaction (``commit``),
while the server does one kind of work at a time:

* idle: nothing for 10 s (a replica's background: revision and job mirroring polls,
  heartbeats, the stale-lease sweep; on SQLite only the revision poll, which sees
  ``deepaas-token``'s offline changes);
* predict: 200 synchronous predictions with a token;
* async prediction: 50 submissions, each waited for until ``done``;
* training: 3 trainings of 3 s each, one at a time;
* polling: one GET of a job's status (what clients do while they wait).

The idle rate is subtracted from the other phases (scaled by their duration), so each
row is what the work itself costs. Statements are counted by their first word.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from aiohttp.test_utils import TestServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scaleout import start_postgres  # noqa: E402
from stress import QUERY  # noqa: E402

from deepaas_like.api import create_app  # noqa: E402
from deepaas_like.settings import Settings  # noqa: E402

SIZES = {"idle_s": 10.0, "predict": 200, "async": 50, "train": 3, "train_s": 3.0, "poll": 100}
SETTLE_S = 1.0  # after a phase: the writes a job's end leaves to background tasks (the idle rate is subtracted)
QUICK = {"idle_s": 2.0, "predict": 20, "async": 5, "train": 1, "train_s": 0.5, "poll": 10}


class Counter:
    """Statements by first word, and commits, of every engine in this process."""

    def __init__(self) -> None:
        self.statements: collections.Counter[str] = collections.Counter()
        self.commits = 0
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._statement)
        sa.event.listen(sa.engine.Engine, "commit", self._commit)

    def _statement(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements[statement.split(None, 1)[0].upper()] += 1

    def _commit(self, conn) -> None:
        self.commits += 1

    def snapshot(self) -> tuple[collections.Counter[str], int, float]:
        return collections.Counter(self.statements), self.commits, time.monotonic()


def difference(counter: Counter, before, idle_rate: dict[str, float] | None = None) -> dict[str, float]:
    statements, commits, started = before
    now_statements, now_commits, now = counter.snapshot()
    elapsed = now - started
    row: dict[str, float] = {k: now_statements[k] - statements[k] for k in set(now_statements) | set(statements)}
    row["commits"] = now_commits - commits
    row["total"] = sum(v for k, v in row.items() if k != "commits")
    if idle_rate:
        for key, rate in idle_rate.items():
            row[key] = row.get(key, 0) - rate * elapsed
    row["seconds"] = elapsed
    return row


def per(row: dict[str, float], n: int) -> dict[str, float]:
    return {k: (v if k == "seconds" else v / n) for k, v in row.items()}


async def wait_done(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    while True:
        async with session.get(url, headers=headers) as response:
            body = await response.json()
        if body["status"] in ("done", "finished", "error", "failed", "interrupted", "canceled"):
            return
        await asyncio.sleep(0.05)


async def measure(store: str, counter: Counter, sizes: dict[str, float]) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="deepaas-store-load-") as folder:
        settings = Settings(
            data_dir=folder,
            store=store,
            model_name=("echobench",),
            executor="thread",
            auth=True,
            registry_preload=False,
            shutdown_timeout=2.0,
        )
        token = create_token_offline(settings)
        headers = {"Authorization": f"Bearer {token}"}
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        rows: dict[str, dict[str, float]] = {}
        try:
            base = str(server.make_url(""))
            async with aiohttp.ClientSession(base) as session:
                await asyncio.sleep(2.0)  # past the start's own reads
                before = counter.snapshot()
                await asyncio.sleep(sizes["idle_s"])
                idle = difference(counter, before)
                idle_rate = {k: v / idle["seconds"] for k, v in idle.items() if k != "seconds"}
                rows["idle, per second"] = idle_rate | {"seconds": idle["seconds"]}

                before = counter.snapshot()
                n_predict, n_async, n_poll, n_train = (int(sizes[k]) for k in ("predict", "async", "poll", "train"))
                train_s = sizes["train_s"]
                for _ in range(n_predict):
                    async with session.post(f"/v2/models/echobench/predict/?{QUERY}", headers=headers) as r:
                        assert r.status == 200, await r.text()
                rows["predict (token), per request"] = per(difference(counter, before, idle_rate), n_predict)

                # submissions and completions together, measured as one phase
                before = counter.snapshot()
                locations = []
                for _ in range(n_async):
                    async with session.post(f"/v2/models/echobench/predictions/?{QUERY}", headers=headers) as r:
                        assert r.status == 202, await r.text()
                        locations.append(r.headers["Location"])
                for location in locations:
                    await wait_done(session, location, headers)
                await asyncio.sleep(SETTLE_S)  # the last jobs' writes, made in the background
                rows["async prediction, per job (submit + run)"] = per(difference(counter, before, idle_rate), n_async)

                before = counter.snapshot()
                for _ in range(n_poll):
                    async with session.get(locations[0], headers=headers) as r:
                        assert r.status == 200
                rows["status GET of a job, per request"] = per(difference(counter, before, idle_rate), n_poll)

                before = counter.snapshot()
                for _ in range(n_train):
                    async with session.post(f"/v2/models/echobench/train/?delay_s={train_s}", headers=headers) as r:
                        assert r.status in (200, 201, 202), await r.text()
                        body = await r.json()
                    await wait_done(session, f"/v2/models/echobench/train/{body['uuid']}", headers)
                await asyncio.sleep(SETTLE_S)
                rows["training, per training"] = per(difference(counter, before, idle_rate), n_train)
        finally:
            await server.close()
        return rows


def create_token_offline(settings: Settings) -> str:
    """A models:predict + models:train token, made by ``deepaas-token create`` (its last line)."""
    command = [
        str(Path(sys.executable).parent / "deepaas-token"),
        "--data-dir",
        settings.data_dir,
        *(["--store", settings.store] if settings.store else []),
        "create",
        "--name",
        "store-load",
        "--scope",
        "models:predict",
        "--scope",
        "models:train",
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    parser.add_argument("--quick", action="store_true", help="smoke-sized (the test suite's run)")
    args = parser.parse_args()
    counter = Counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    sizes = QUICK if args.quick else SIZES
    results["sqlite"] = asyncio.run(measure("", counter, sizes))
    if not args.no_postgresql:
        postgres = start_postgres()
        try:
            results["postgresql"] = asyncio.run(measure(postgres.new_database(), counter, sizes))
        finally:
            postgres.stop()
    for store, rows in results.items():
        print(f"\n{store}")
        for name, row in rows.items():
            kinds = ", ".join(
                f"{k} {row[k]:.2f}"
                for k in sorted(row)
                if k not in ("seconds", "total", "commits") and abs(row[k]) >= 0.005
            )
            print(f"  {name}: {row.get('total', 0):.2f} statements, {row.get('commits', 0):.2f} commits ({kinds})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
