"""Tracking tables: runs, their params and tags, the append-only metric history, artifacts.

``run_latest`` keeps each run's latest value per metric (the highest step; among equal steps the last
written), upserted in the same transaction as the history rows with ``ON CONFLICT DO UPDATE WHERE
excluded.step >= step``: one row per (run, key), so writers never lose an update, and a batch upserts
its keys in sorted order, so two writers of one run always lock rows in the same order and cannot
deadlock (MLflow's ``latest_metrics`` can). Filters and sorts read it through its ``(key, value)`` index.
Non-finite metric values are stored as ``value = NULL`` with ``kind`` saying which (SQLite turns a
NaN into NULL, so NaN must not depend on the float column), and so never match a comparison.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
)

from labvault.storage.meta.tables.core import metadata

__all__ = ["run_artifacts", "run_latest", "run_metrics", "run_params", "run_tags", "runs"]

# SQLite makes an INTEGER PRIMARY KEY the rowid (fast appends); PostgreSQL gets a bigint identity.
_MetricId = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project", String(128), nullable=False),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parent_id", String(32), nullable=True),
    Column("user", String(256), nullable=False),
    Column("host", String(256), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("seed", BigInteger, nullable=True),
    Column("inputs", Text, nullable=False),  # JSON list of reference strings
    Column("capture", Text, nullable=False),  # JSON document (git, command, environment, ...)
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("status IN ('running', 'finished', 'failed', 'killed')", name="status"),
    # No (project, started_at) index on purpose: with one, SQLite walks a whole project to order it
    # instead of starting from the few runs a filter's (key, value) indexes name.
    Index("ix_runs_started", "started_at"),
)

run_params = Table(
    "run_params",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),  # JSON of the logged value (4 stays 4, "4" stays "4")
    Column("text", Text, nullable=False),  # str() of the value: string comparisons and conflicts
    Column("num", Float, nullable=True),  # the value as a number when it is one: 4 and "4" both 4.0
    # On SQLite, run_id last: a filter's subquery (SELECT run_id ... WHERE key = ? AND num ...) reads
    # the index alone. PostgreSQL gains nothing from it and, with stale statistics, chose far worse plans.
    Index("ix_run_params_key_num_run", "key", "num", "run_id").ddl_if(dialect="sqlite"),
    Index("ix_run_params_key_num", "key", "num").ddl_if(dialect="postgresql"),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("text", Text, nullable=False),
    Column("num", Float, nullable=True),
    Index("ix_run_tags_key_num_run", "key", "num", "run_id").ddl_if(dialect="sqlite"),
    Index("ix_run_tags_key_num", "key", "num").ddl_if(dialect="postgresql"),
)

run_metrics = Table(
    "run_metrics",
    metadata,
    Column("id", _MetricId, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("step", BigInteger, nullable=False),
    # Milliseconds since the epoch: the history is the hot table, and an integer is cheap on both backends.
    Column("ts_ms", BigInteger, nullable=False),
    Column("value", Float, nullable=True),  # NULL when not finite
    Column("kind", SmallInteger, nullable=False),  # 0 finite, 1 NaN, 2 +Infinity, 3 -Infinity
    CheckConstraint("kind IN (0, 1, 2, 3)", name="kind"),
    Index("ix_run_metrics_latest", "run_id", "key", "step", "id"),
)

run_latest = Table(
    "run_latest",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("step", BigInteger, nullable=False),
    Column("value", Float, nullable=True),  # NULL when not finite
    Column("kind", SmallInteger, nullable=False),
    Index("ix_run_latest_key_value_run", "key", "value", "run_id").ddl_if(dialect="sqlite"),
    Index("ix_run_latest_key_value", "key", "value").ddl_if(dialect="postgresql"),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("role", String(8), nullable=False),  # artifact | output
    Column("kind", String(8), nullable=False),  # file | tree
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("path", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('file', 'tree')", name="kind"),
    CheckConstraint("role IN ('artifact', 'output')", name="role"),
)
