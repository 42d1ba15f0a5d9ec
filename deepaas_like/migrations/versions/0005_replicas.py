"""Replicas on one store: which server runs a job, its heartbeat (lease), cancel requests
from other replicas, the time of its last change, and its log as chunks."""

import sqlalchemy as sa
from alembic import op

revision = "0005_replicas"
down_revision = "0004_revision"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("node", sa.Text))
    op.add_column("jobs", sa.Column("heartbeat", sa.Double))
    op.add_column("jobs", sa.Column("updated", sa.Double))
    op.add_column("jobs", sa.Column("cancel_requested", sa.Integer))
    op.create_index("jobs_updated", "jobs", ["updated"])
    op.create_table(
        "job_logs",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_logs")
    op.drop_index("jobs_updated", "jobs")
    for name in ("cancel_requested", "updated", "heartbeat", "node"):
        op.drop_column("jobs", name)
