"""Pipeline tables: the stage cache (stage key -> stored outputs) and the named pipeline versions.

A cache row is written only after every output object is stored, in one transaction with its
``object_refs`` rows (owner ``stage:<key>``), so gc keeps what the cache points at and a crash
leaves either no row or a complete one. Tags are immutable: ``pipeline:NAME``.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table, Text

from labvault.storage.meta.tables.core import metadata

__all__ = ["pipeline_cache", "pipeline_tags"]

pipeline_cache = Table(
    "pipeline_cache",
    metadata,
    Column("key", String(64), primary_key=True),  # the stage key, hex
    Column("stage", String(300), nullable=False),
    Column("outs", Text, nullable=False),  # JSON: {path: [sha256 hex, "file" | "dir"]}
    Column("run_id", String(32), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(320), nullable=False),
)

pipeline_tags = Table(
    "pipeline_tags",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("definition", String(64), nullable=False),  # labvault.yaml's bytes, an object
    Column("lock", String(64), nullable=False),  # labvault.lock's bytes, an object
    Column("commit", String(64), nullable=True),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(320), nullable=False),
)
