"""Model registry tables: models, immutable versions, aliases with their move history, approvals,
and the append-only, hash-chained audit log.

``registry_aliases.lock_version`` is an optimistic version column: a promotion reads it before its
gates run and moves the alias only if it is unchanged at commit, so of two racing promotions one
wins and the other is refused (and audited) as a lost race.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from labvault.storage.meta.tables.core import metadata

__all__ = [
    "audit_events",
    "registry_alias_moves",
    "registry_aliases",
    "registry_approvals",
    "registry_models",
    "registry_versions",
]

registry_models = Table(
    "registry_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(300), nullable=False),
    UniqueConstraint("project", "name", name="uq_registry_models_project_name"),
)

registry_versions = Table(
    "registry_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registry_models.id"), nullable=False),
    Column("version", String(64), nullable=False),  # X.Y.Z: up to 59 characters
    # Each part up to 2^63-1 (refs.MAX_VERSION_PART): INTEGER would stop at 2^31-1 on PostgreSQL.
    Column("major", BigInteger, nullable=False),
    Column("minor", BigInteger, nullable=False),
    Column("patch", BigInteger, nullable=False),
    Column("tree", String(64), nullable=False),  # root tree: PROJECT/MODEL/VERSION/...
    Column("content", String(64), nullable=False),  # the VERSION folder's tree: identity of the content
    Column("size", BigInteger, nullable=False),
    Column("files", Integer, nullable=False),
    Column("run_id", String(32), nullable=True),
    Column("source", Text, nullable=False),  # JSON: path / run / artifact it came from
    Column("message", Text, nullable=True),
    Column("notes", Text, nullable=False),  # JSON list of strings
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(300), nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=True),
    Column("archived_by", String(300), nullable=True),
    UniqueConstraint("model_id", "version", name="uq_registry_versions_model_version"),
    # The highest version (each automatic registration reads it) is one seek, not a scan.
    Index("ix_registry_versions_order", "model_id", "major", "minor", "patch"),
)

registry_aliases = Table(
    "registry_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("registry_models.id"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("version_id", Integer, ForeignKey("registry_versions.id"), nullable=True),  # NULL: unset
    Column("lock_version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(300), nullable=False),
)

registry_alias_moves = Table(
    "registry_alias_moves",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registry_models.id"), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("action", String(16), nullable=False),  # promote | rollback | unset
    Column("from_version_id", Integer, ForeignKey("registry_versions.id"), nullable=True),
    Column("to_version_id", Integer, ForeignKey("registry_versions.id"), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(300), nullable=False),
    Column("reason", Text, nullable=True),
    Column("policy_hash", String(64), nullable=True),
    Column("gates", Text, nullable=False),  # JSON list of gate results
    Column("audit_seq", BigInteger, nullable=False),
    Index("ix_registry_alias_moves_model_alias", "model_id", "alias", "id"),
)

registry_approvals = Table(
    "registry_approvals",
    metadata,
    Column("version_id", Integer, ForeignKey("registry_versions.id"), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("actor", String(300), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("message", Text, nullable=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(300), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject", String(512), nullable=False),  # project/model@alias: up to 386 characters
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("policy_hash", String(64), nullable=True),
    Column("details", Text, nullable=False),  # canonical JSON object
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
