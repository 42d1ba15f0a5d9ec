"""The server's store: one per data directory, versioned by Alembic, migrated on open,
on SQLite and on PostgreSQL alike (the ``store`` fixture runs each test on both)."""

import asyncio
import json
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from deepaas_like import tables
from deepaas_like.database import HEAD, Database, DataDirInUse, StoreTooNew, StoreUnavailable
from deepaas_like.jobs.model import Job, JobKind, JobStatus
from deepaas_like.jobs.store import JobStore

pytestmark = pytest.mark.stores("sqlite", "postgresql")

JOBS_V1 = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER UNIQUE, id TEXT PRIMARY KEY, kind TEXT, model TEXT, args TEXT, status TEXT,
    created REAL, started REAL, finished REAL, result TEXT, result_type TEXT, error_status INTEGER,
    message TEXT, progress REAL, progress_message TEXT, callback_url TEXT, callback_status TEXT,
    callback_attempts INTEGER, callback_error TEXT)"""  # as a server from before the registry wrote it


async def test_the_migrations_create_the_tables_the_code_uses(tmp_path, store):
    db = Database(tmp_path, url=store)
    await db.open()
    try:

        def differences(conn):
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
            return compare_metadata(MigrationContext.configure(conn), tables.metadata)

        found = await db.run(differences)
        # SQLite reports no server default for columns added later; nothing else may differ
        assert [d for d in found if not (isinstance(d, list) and d[0][0] == "modify_default")] == []
        assert set(Job.persisted_fields()) <= set(tables.jobs.c.keys())
    finally:
        await db.close()


def test_the_head_read_from_the_files_is_alembic_s_and_an_up_to_date_store_opens_without_alembic(tmp_path, store):
    from alembic.script import ScriptDirectory

    from deepaas_like.database import _alembic_config

    assert HEAD == ScriptDirectory.from_config(_alembic_config()).get_current_head()
    program = (
        "import asyncio, sys\n"
        "from deepaas_like.database import Database\n"
        "async def main():\n"
        f"    db = Database({str(tmp_path)!r}, url={store!r})\n"
        "    await db.open()\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert first.stdout.split() == ["True"]  # a new store: migrated, with Alembic
    again = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert again.stdout.split() == ["False"]  # up to date: Alembic (12 MiB) never imported


async def test_a_store_written_by_a_newer_version_is_refused(tmp_path, store):
    db = Database(tmp_path, url=store)
    await db.open()
    await db.run(lambda conn: conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'")))
    await db.close()
    newer = Database(tmp_path, url=store)
    with pytest.raises(StoreTooNew, match="schema revision 0099_future, newer than this deepaas_like understands"):
        await newer.open()
    await newer.close()
    fixer = sa.create_engine(
        store.replace("postgresql://", "postgresql+psycopg://") if store else f"sqlite:///{tmp_path / 'state.sqlite3'}"
    )
    with fixer.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :head"), {"head": HEAD})
    fixer.dispose()
    again = Database(tmp_path, url=store)  # the refusal released the data directory's lock
    await again.open()
    await again.close()


async def test_one_server_per_data_directory(tmp_path, store):
    first = Database(tmp_path, url=store)
    await first.open()
    second = Database(tmp_path, url=store)
    with pytest.raises(DataDirInUse, match="in use by another deepaas-run"):
        await second.open()
    await second.close()
    await first.close()


async def test_jobs_round_trip_through_the_store(tmp_path, store):
    db = Database(tmp_path, url=store)
    await db.open()
    store_ = JobStore(db)
    job = Job("j1", JobKind.PREDICTION, "iris", {"x": 1})
    await store_.insert(job)
    await store_.insert(Job("j2", JobKind.TRAINING, "iris", {}))
    job.status, job.result, job.progress = JobStatus.DONE, {"label": "setosa"}, 1.0
    await store_.save(job, "status", "result", "progress")
    back, second = await store_.load()
    assert (back.status, back.result, back.progress, back.kind) == (
        JobStatus.DONE,
        {"label": "setosa"},
        1.0,
        JobKind.PREDICTION,
    )
    assert second.id == "j2"
    await store_.delete(["j1", "j2"])
    assert await store_.load() == []
    await db.close()


@pytest.mark.stores("postgresql")
async def test_replicas_inserting_jobs_at_once_all_get_their_own_place(tmp_path, store):
    replicas = [Database(tmp_path / f"replica{i}", url=store) for i in range(3)]
    for db in replicas:
        await db.open()
    try:
        stores = [JobStore(db) for db in replicas]
        await asyncio.gather(*(stores[i % 3].insert(Job(f"j{i}", JobKind.PREDICTION, "iris", {})) for i in range(60)))
        loaded = await stores[0].load()
        assert sorted(j.id for j in loaded) == sorted(f"j{i}" for i in range(60))
        seqs = await replicas[0].run(lambda conn: [row[0] for row in conn.execute(sa.text("SELECT seq FROM jobs"))])
        assert sorted(seqs) == list(range(1, 61))
    finally:
        for db in replicas:
            await db.close()


async def test_another_process_s_change_is_seen(tmp_path, store):
    from deepaas_like.auth.access import AccessTables, User

    server, tool = Database(tmp_path, url=store), Database(tmp_path, url=store, exclusive=False)
    await server.open()
    await tool.open()
    try:
        await server.changed_elsewhere()  # the baseline
        assert not await server.changed_elsewhere()
        await AccessTables(tool).save_user(User("u1", "ann", None, 1.0))
        assert await server.changed_elsewhere()
        assert not await server.changed_elsewhere()
    finally:
        await tool.close()
        await server.close()


@pytest.mark.stores("postgresql")
def test_replicas_opening_a_new_store_together_migrate_it_once(tmp_path, store):
    """Four processes open one empty PostgreSQL database at the same moment, as replicas
    started together do: one migrates, the others wait for it and find the schema there."""
    code = (
        "import asyncio, sys\n"
        "from deepaas_like.database import Database\n"
        "async def main():\n"
        "    db = Database(sys.argv[1], url=sys.argv[2])\n"
        "    await db.open()\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"replica{i}"), store],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in starts]
    assert [code for _, _, code in results] == [0] * 4, [err[-2000:] for _, err, _ in results]
    engine = sa.create_engine(store.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD
    engine.dispose()


@pytest.mark.stores("sqlite")
async def test_a_version_1_job_database_is_adopted_and_migrated(tmp_path, store):
    """A data directory of a server from before the registry: jobs.sqlite3 at schema 1."""
    old = sqlite3.connect(tmp_path / "jobs.sqlite3")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(JOBS_V1)
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    v1 = [row[1] for row in old.execute("PRAGMA table_info(jobs)") if row[1] != "seq"]
    values = {name: None for name in v1} | {
        "id": "abc",
        "kind": "training",
        "model": "demo",
        "args": json.dumps({"epochs": 2}),
        "status": "done",
        "created": 1.0,
        "result": json.dumps({"loss": 0.5}),
        "callback_attempts": 0,
    }
    old.execute(f"INSERT INTO jobs VALUES (1, {', '.join('?' for _ in v1)})", [values[n] for n in v1])
    old.commit()
    old.close()
    db = Database(tmp_path)
    await db.open()
    try:
        assert not (tmp_path / "jobs.sqlite3").exists() and (tmp_path / "state.sqlite3").exists()
        (job,) = await JobStore(db).load()
        assert (job.id, job.kind, job.status, job.args, job.result, job.owner) == (
            "abc",
            JobKind.TRAINING,
            JobStatus.DONE,
            {"epochs": 2},
            {"loss": 0.5},
            None,
        )
        names = await db.run(lambda conn: set(sa.inspect(conn).get_table_names()))
        assert {"uploaded_models", "model_versions", "tokens", "users", "model_access", "audit"} <= names
        facts = await db.run(
            lambda conn: (
                MigrationContext.configure(conn).get_current_revision(),
                dict(conn.execute(sa.select(tables.meta.c.key, tables.meta.c.value)).all()),
            )
        )
        assert facts == (HEAD, {"revision": "0"})  # schema_version gave way to Alembic's own record
    finally:
        await db.close()


@pytest.mark.stores("sqlite")
async def test_a_store_that_cannot_be_reached_says_so(tmp_path, store):
    for url, message in (
        ("postgresql://nobody@127.0.0.1:1/none", "--store postgresql://nobody@127.0.0.1:1/none: cannot open it"),
        ("mysql://x/y", "unsupported store 'mysql'"),
    ):
        db = Database(tmp_path, url=url)
        with pytest.raises(StoreUnavailable, match=message):
            await db.open()
        await db.close()
