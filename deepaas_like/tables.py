"""The tables of the server's state, as SQLAlchemy Core objects.

The code reads and writes through these; the migrations (:mod:`deepaas_like.migrations`)
create them, step by step, on SQLite and on PostgreSQL alike. A change here needs a new
migration step (``tests/e2e/test_database.py`` checks that the two agree).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

meta = sa.Table(  # small facts about the store itself: its revision counter
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", sa.Integer, unique=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("args", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("created", sa.Double),
    sa.Column("started", sa.Double),
    sa.Column("finished", sa.Double),
    sa.Column("result", sa.Text),
    sa.Column("result_type", sa.Text),
    sa.Column("error_status", sa.Integer),
    sa.Column("message", sa.Text),
    sa.Column("progress", sa.Double),
    sa.Column("progress_message", sa.Text),
    sa.Column("callback_url", sa.Text),
    sa.Column("callback_status", sa.Text),
    sa.Column("callback_attempts", sa.Integer),
    sa.Column("callback_error", sa.Text),
    sa.Column("owner", sa.Text),
    sa.Column("node", sa.Text),  # the server that runs it (replicas)
    sa.Column("heartbeat", sa.Double),  # that server's last sign of life for it
    sa.Column("updated", sa.Double),
    sa.Column("cancel_requested", sa.Integer),  # by another replica: the one that runs it cancels it
    sa.Index("jobs_updated", "updated"),
)

job_logs = sa.Table(  # the logs of jobs, shipped by the replica that runs them for the others to read
    "job_logs",
    metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

uploaded_models = sa.Table(
    "uploaded_models",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
    sa.Column("last_predict", sa.Double),
    sa.Column("current_version", sa.Integer),
    sa.Column("is_public", sa.Integer, nullable=False, server_default="0"),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("owner", sa.Text),
    sa.Column("archived", sa.Double),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("library", sa.Text, nullable=False),
    sa.Column("filetype", sa.Text, nullable=False),
    sa.Column("filename", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("signature", sa.Text),
    sa.Column("config", sa.Text),
    sa.Column("optimization", sa.Text),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("models", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("expires", sa.Double),
    sa.Column("last_used", sa.Double),
    sa.Column("revoked", sa.Double),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("username", sa.Text, unique=True),
    sa.Column("email", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
)

model_access = sa.Table(
    "model_access",
    metadata,
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("can_share", sa.Integer, nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.Text),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("detail", sa.Text),
)
