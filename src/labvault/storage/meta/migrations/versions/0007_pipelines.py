"""Pipelines: the stage cache and named pipeline versions.

Revision ID: 0007_pipelines
Revises: 0006_bigint_versions
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_pipelines"
down_revision = "0006_bigint_versions"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pipeline_cache",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(300), nullable=False),
        sa.Column("outs", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_pipeline_cache"),
    )
    op.create_table(
        "pipeline_tags",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("definition", sa.String(64), nullable=False),
        sa.Column("lock", sa.String(64), nullable=False),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pipeline_tags"),
    )


def downgrade() -> None:
    op.drop_table("pipeline_tags")
    op.drop_table("pipeline_cache")
