"""Authentication: API tokens, users, per-model roles, the audit log; jobs get an owner."""

import sqlalchemy as sa
from alembic import op

revision = "0003_auth"
down_revision = "0002_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("models", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
        *(sa.Column(name, sa.Double) for name in ("expires", "last_used", "revoked")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, unique=True),
        sa.Column("email", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.create_table(
        "model_access",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("can_share", sa.Integer, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("actor", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.add_column("jobs", sa.Column("owner", sa.Text))


def downgrade() -> None:
    op.drop_column("jobs", "owner")
    for table in ("audit", "model_access", "users", "tokens"):
        op.drop_table(table)
