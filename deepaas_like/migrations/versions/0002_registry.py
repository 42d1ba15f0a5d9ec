"""The registry: uploaded models and their versions."""

import sqlalchemy as sa
from alembic import op

revision = "0002_registry"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploaded_models",
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
    op.create_table(
        "model_versions",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("library", sa.Text, nullable=False),
        sa.Column("filetype", sa.Text, nullable=False),
        sa.Column("filename", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        *(sa.Column(name, sa.Text) for name in ("error", "signature", "config", "optimization")),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_table("uploaded_models")
