"""A revision counter that writers of tokens, users and roles bump (replicas reload on change)."""

import sqlalchemy as sa
from alembic import op

revision = "0004_revision"
down_revision = "0003_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "revision", "value": "0"}])


def downgrade() -> None:
    op.execute("DELETE FROM meta WHERE key = 'revision'")
