"""Data snapshot tables: one row per immutable ``data:<name>@v<N>``.

The snapshot's content lives in the object store as a tree (``content_hash``); the row holds what
listings need without reading objects. The root tree is recorded in ``object_refs`` (kind ``tree``)
in the same transaction, so fsck and gc follow everything below it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from labvault.storage.meta.tables.core import metadata

__all__ = ["data_snapshots"]

data_snapshots = Table(
    "data_snapshots",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", BigInteger, primary_key=True),  # up to v(2^63-1): BIGINT on PostgreSQL
    Column("content_hash", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # file | dir
    Column("storage_uri", Text, nullable=False),  # project-relative path, or the import URL
    Column("file_count", Integer, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("tabular", Boolean, nullable=False),
    Column("record_count", BigInteger, nullable=True),
    Column("schema_hash", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("message", Text, nullable=False),
    Column("source_url", Text, nullable=True),
    Column("source_version", Text, nullable=True),
    Column("notes", Text, nullable=False),  # JSON list of one-line notes (e.g. skipped tabular stats)
    CheckConstraint("kind IN ('file', 'dir')", name="kind"),
    CheckConstraint("version >= 1", name="version"),
    Index("ix_data_snapshots_content_hash", "content_hash"),
)
