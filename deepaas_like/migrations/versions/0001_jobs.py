"""Durable jobs (trainings and async predictions) and the store's own facts."""

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text), if_not_exists=True
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, unique=True),
        sa.Column("id", sa.Text, primary_key=True),
        *(sa.Column(name, sa.Text) for name in ("kind", "model", "args", "status")),
        *(sa.Column(name, sa.Double) for name in ("created", "started", "finished")),
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
    )


def downgrade() -> None:
    op.drop_table("jobs")
