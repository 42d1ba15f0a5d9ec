"""The server's database: one per data directory, versioned, migrated on open."""

import json
import sqlite3

import pytest

from deepaas_like.database import JOBS_V1, SCHEMA_VERSION, Database, DataDirInUse, StoreTooNew, columns_of
from deepaas_like.jobs.model import Job, JobKind, JobStatus
from deepaas_like.jobs.store import JobStore


async def test_a_database_written_by_a_newer_version_is_refused(tmp_path):
    db = Database(tmp_path)
    await db.open()
    await db.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    newer = Database(tmp_path)
    with pytest.raises(StoreTooNew, match="schema version 99, newer than this deepaas_like understands"):
        await newer.open()
    await newer.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    again = Database(tmp_path)  # the refusal released the data directory's lock
    await again.open()
    await again.close()


async def test_one_server_per_data_directory(tmp_path):
    first = Database(tmp_path)
    await first.open()
    second = Database(tmp_path)
    with pytest.raises(DataDirInUse, match="in use by another deepaas-run"):
        await second.open()
    await second.close()
    await first.close()


async def test_a_version_1_job_database_is_adopted_and_migrated(tmp_path):
    """A data directory of a server from before the registry: jobs.sqlite3 at schema 1."""
    old = sqlite3.connect(tmp_path / "jobs.sqlite3")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(JOBS_V1)
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    v1 = [c for c in columns_of(old, "jobs") if c != "seq"]
    values = {name: None for name in v1} | {
        "id": "abc", "kind": "training", "model": "demo", "args": json.dumps({"epochs": 2}), "status": "done",
        "created": 1.0, "result": json.dumps({"loss": 0.5}), "callback_attempts": 0}
    old.execute(f"INSERT INTO jobs VALUES (1, {', '.join('?' for _ in v1)})", [values[n] for n in v1])
    old.commit()
    old.close()
    db = Database(tmp_path)
    await db.open()
    try:
        assert not (tmp_path / "jobs.sqlite3").exists() and (tmp_path / "state.sqlite3").exists()
        (job,) = await JobStore(db).load()
        assert (job.id, job.kind, job.status, job.args, job.result, job.owner) == (
            "abc", JobKind.TRAINING, JobStatus.DONE, {"epochs": 2}, {"loss": 0.5}, None)
        tables = await db.run(lambda conn: {t: columns_of(conn, t) for t in (
            "uploaded_models", "model_versions", "tokens", "users", "model_access", "audit")})
        assert "current_version" in tables["uploaded_models"] and "sha256" in tables["model_versions"]
        assert "hash" in tables["tokens"] and "role" in tables["model_access"] and "actor" in tables["audit"]
        version = await db.run(lambda conn: conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        assert int(version) == SCHEMA_VERSION
    finally:
        await db.close()


async def test_jobs_round_trip_through_the_store(tmp_path):
    db = Database(tmp_path)
    await db.open()
    store = JobStore(db)
    job = Job("j1", JobKind.PREDICTION, "iris", {"x": 1})
    await store.insert(job)
    job.status, job.result, job.progress = JobStatus.DONE, {"label": "setosa"}, 1.0
    await store.save(job, "status", "result", "progress")
    (back,) = await store.load()
    assert (back.status, back.result, back.progress, back.kind) == (JobStatus.DONE, {"label": "setosa"}, 1.0,
                                                                    JobKind.PREDICTION)
    await store.delete(["j1"])
    assert await store.load() == []
    await db.close()
