"""The team server's tables: API tokens (stored salted and hashed) and idempotency keys."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, Index, String, Table, Text

from labvault.storage.meta.tables.core import metadata

__all__ = ["server_requests", "server_tokens"]

server_tokens = Table(
    "server_tokens",
    metadata,
    Column("id", String(32), primary_key=True),  # the public half of the token, also its name in listings
    Column("user", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("hash", String(64), nullable=False),  # sha256(salt + secret), hex
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("role IN ('reader', 'writer', 'maintainer', 'admin')", name="role"),
    Index("ix_server_tokens_user", "user"),
)

server_requests = Table(
    "server_requests",
    metadata,
    # The scope (who, on what) and the client's idempotency key: a retried request finds its first answer.
    Column("scope", String(300), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("state", String(8), nullable=False),  # pending | done
    Column("result", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("state IN ('pending', 'done')", name="state"),
)
