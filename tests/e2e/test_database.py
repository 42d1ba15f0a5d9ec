"""The server's store: one per data directory, versioned by Alembic, migrated on open,
on SQLite and on PostgreSQL alike (the ``store`` fixture runs each test on both)."""

import asyncio
import json
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
from support.stores import version_1_store

pytestmark = pytest.mark.stores("sqlite", "postgresql")


def schema_of(conn: sa.Connection) -> dict:
    """Every table's columns, keys and indexes, and the rows of the tables the migrations
    fill, as the database itself reports them (column order aside)."""
    inspector = sa.inspect(conn)
    columns, indexes = inspector.get_columns, inspector.get_indexes
    schema: dict = {}
    for name in sorted(inspector.get_table_names()):
        schema[name] = {
            "columns": {c["name"]: (str(c["type"]), c["nullable"], c.get("default")) for c in columns(name)},
            "primary key": inspector.get_pk_constraint(name)["constrained_columns"],
            "foreign keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]), str(f["options"]))
                for f in inspector.get_foreign_keys(name)
            ),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in indexes(name)),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
        }
    rows = [conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1")).all() for t in ("meta", "alembic_version")]
    return {"tables": schema, "rows": [[tuple(r) for r in table] for table in rows]}


async def test_a_new_store_is_what_every_migration_makes_and_the_tables_the_code_uses(tmp_path, store):
    """A new store is created from :mod:`deepaas_like.tables` without Alembic; an older one
    is migrated step by step: both must end the same."""
    from alembic import command

    from deepaas_like.database import _alembic_config

    url = store.replace("postgresql://", "postgresql+psycopg://", 1) or f"sqlite:///{tmp_path / 'state.sqlite3'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # every migration, by Alembic, on an empty store
        command.upgrade(_alembic_config(conn), "head")
        assert MigrationContext.configure(conn).get_current_revision() == HEAD
        found = compare_metadata(MigrationContext.configure(conn), tables.metadata)
        migrated = schema_of(conn)
        tables.metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE alembic_version"))
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()
    # SQLite reports no server default for columns added later; nothing else may differ
    assert [d for d in found if not (isinstance(d, list) and d[0][0] == "modify_default")] == []
    assert set(Job.persisted_fields()) <= set(tables.jobs.c.keys())
    assert len(migrated["tables"]) == len(tables.metadata.tables) + 1
    assert migrated["rows"] == [[("revision", "0")], [(HEAD,)]]

    db = Database(tmp_path, url=store)  # a new store, created
    await db.open()
    try:
        assert await db.run(schema_of) == migrated
    finally:
        await db.close()


def test_the_head_read_from_the_files_is_alembic_s_and_a_new_or_up_to_date_store_opens_without_alembic(tmp_path, store):
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
    assert first.stdout.split() == ["False"]  # a new store: created from the tables, without Alembic
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
    old = version_1_store(tmp_path)
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
