"""Data snapshots.

Revision ID: 0002_data
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_data"
down_revision = "0001_foundation"
branch_labels = ("data",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_snapshots",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("storage_uri", sa.Text, nullable=False),
        sa.Column("file_count", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("tabular", sa.Boolean, nullable=False),
        sa.Column("record_count", sa.BigInteger, nullable=True),
        sa.Column("schema_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("source_url", sa.Text, nullable=True),
        sa.Column("source_version", sa.Text, nullable=True),
        sa.Column("notes", sa.Text, nullable=False),
        sa.CheckConstraint("kind IN ('file', 'dir')", name="ck_data_snapshots_kind"),
        sa.CheckConstraint("version >= 1", name="ck_data_snapshots_version"),
        sa.PrimaryKeyConstraint("name", "version", name="pk_data_snapshots"),
    )
    op.create_index("ix_data_snapshots_content_hash", "data_snapshots", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_data_snapshots_content_hash", "data_snapshots")
    op.drop_table("data_snapshots")
