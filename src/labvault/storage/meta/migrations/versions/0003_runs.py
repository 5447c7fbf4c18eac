"""Tracking: runs, params, tags, metric history, artifacts.

Revision ID: 0003_runs
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_runs"
down_revision = "0001_foundation"
branch_labels = ("runs",)
depends_on = None

_MetricId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("user", sa.String(256), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("seed", sa.BigInteger, nullable=True),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("capture", sa.Text, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed', 'killed')", name="ck_runs_status"),
    )
    op.create_index("ix_runs_started", "runs", ["started_at"])
    op.create_table(
        "run_params",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("num", sa.Float, nullable=True),
    )
    op.create_index("ix_run_params_key_num", "run_params", ["key", "num"])
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("num", sa.Float, nullable=True),
    )
    op.create_index("ix_run_tags_key_num", "run_tags", ["key", "num"])
    op.create_table(
        "run_metrics",
        sa.Column("id", _MetricId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.CheckConstraint("kind IN (0, 1, 2, 3)", name="ck_run_metrics_kind"),
    )
    op.create_index("ix_run_metrics_latest", "run_metrics", ["run_id", "key", "step", "id"])
    op.create_table(
        "run_latest",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_run_latest_key_value", "run_latest", ["key", "value"])
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(512), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('file', 'tree')", name="ck_run_artifacts_kind"),
        sa.CheckConstraint("role IN ('artifact', 'output')", name="ck_run_artifacts_role"),
    )


def downgrade() -> None:
    op.drop_table("run_artifacts")
    op.drop_index("ix_run_latest_key_value", "run_latest")
    op.drop_table("run_latest")
    op.drop_index("ix_run_metrics_latest", "run_metrics")
    op.drop_table("run_metrics")
    op.drop_index("ix_run_tags_key_num", "run_tags")
    op.drop_table("run_tags")
    op.drop_index("ix_run_params_key_num", "run_params")
    op.drop_table("run_params")
    op.drop_index("ix_runs_started", "runs")
    op.drop_table("runs")
