"""Stores written by older servers, for the tests of their migration."""

import sqlite3
from pathlib import Path

JOBS_V1 = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER UNIQUE, id TEXT PRIMARY KEY, kind TEXT, model TEXT, args TEXT, status TEXT,
    created REAL, started REAL, finished REAL, result TEXT, result_type TEXT, error_status INTEGER,
    message TEXT, progress REAL, progress_message TEXT, callback_url TEXT, callback_status TEXT,
    callback_attempts INTEGER, callback_error TEXT)"""  # as a server from before the registry wrote it


def version_1_store(data_dir: Path) -> sqlite3.Connection:
    """``data_dir/jobs.sqlite3`` as a server from before the registry left it (schema 1, no
    job yet), open for the caller to add jobs, commit and close."""
    old = sqlite3.connect(data_dir / "jobs.sqlite3")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(JOBS_V1)
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    return old
