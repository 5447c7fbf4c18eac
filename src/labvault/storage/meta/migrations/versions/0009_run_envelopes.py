"""Finished runs' chart envelopes: each long metric history downsampled once, when its run ends.

Derived data: a missing row is recomputed from ``run_metrics`` (and may be stored again), a run's rows
go with the run, and push/pull never carry them.

Revision ID: 0009_run_envelopes
Revises: 0003_runs
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_run_envelopes"
down_revision = "0003_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_envelopes",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("buckets", sa.Integer, primary_key=True),
        sa.Column("points", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_envelopes")
