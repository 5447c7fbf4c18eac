"""Rows of ``data_snapshots`` <-> :class:`~labvault.entities.Snapshot`. Repos never commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.entities import Snapshot
from labvault.errors import ValidationError
from labvault.refs import MAX_VERSION_PART, Digest
from labvault.storage.meta.tables import data_snapshots as t

__all__ = [
    "find_by_content",
    "get_snapshot",
    "insert_snapshot",
    "latest_per_dataset",
    "list_versions",
    "next_version",
]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row(r: Any) -> Snapshot:
    return Snapshot(
        name=r.name,
        version=r.version,
        content_hash=Digest(r.content_hash),
        kind=r.kind,
        storage_uri=r.storage_uri,
        file_count=r.file_count,
        total_bytes=r.total_bytes,
        tabular=bool(r.tabular),
        record_count=r.record_count,
        schema_hash=r.schema_hash,
        created_at=_utc(r.created_at),
        created_by=r.created_by,
        message=r.message,
        source_url=r.source_url,
        source_version=r.source_version,
        notes=tuple(json.loads(r.notes or "[]")),
    )


def insert_snapshot(conn: Connection, s: Snapshot) -> None:
    conn.execute(
        sa.insert(t).values(
            name=s.name,
            version=s.version,
            content_hash=s.content_hash.hex,
            kind=s.kind,
            storage_uri=s.storage_uri,
            file_count=s.file_count,
            total_bytes=s.total_bytes,
            tabular=s.tabular,
            record_count=s.record_count,
            schema_hash=s.schema_hash,
            created_at=s.created_at,
            created_by=s.created_by,
            message=s.message,
            source_url=s.source_url,
            source_version=s.source_version,
            notes=json.dumps(list(s.notes)),
        )
    )


def next_version(conn: Connection, name: str) -> int:
    current = int(conn.execute(sa.select(sa.func.max(t.c.version)).where(t.c.name == name)).scalar() or 0)
    if current >= MAX_VERSION_PART:  # the column is a signed 64-bit integer on both backends
        raise ValidationError(
            f"data:{name} is at v{current}, the last data version number",
            hint="add the data under another dataset name",
        )
    return current + 1


def get_snapshot(conn: Connection, name: str, version: int | None = None) -> Snapshot | None:
    """The given version, or the latest when ``version`` is None."""
    q = sa.select(t).where(t.c.name == name)
    q = q.where(t.c.version == version) if version is not None else q.order_by(t.c.version.desc()).limit(1)
    r = conn.execute(q).first()
    return _row(r) if r is not None else None


def find_by_content(conn: Connection, content_hash: Digest) -> list[Snapshot]:
    rows = conn.execute(sa.select(t).where(t.c.content_hash == content_hash.hex).order_by(t.c.name, t.c.version))
    return [_row(r) for r in rows]


def list_versions(conn: Connection, name: str) -> list[Snapshot]:
    return [_row(r) for r in conn.execute(sa.select(t).where(t.c.name == name).order_by(t.c.version.desc()))]


def latest_per_dataset(conn: Connection) -> list[tuple[Snapshot, int]]:
    """(latest snapshot, number of versions) for every dataset, by name."""
    newest = (
        sa.select(t.c.name, sa.func.max(t.c.version).label("v"), sa.func.count().label("n"))
        .group_by(t.c.name)
        .subquery()
    )
    q = (
        sa.select(t, newest.c.n)
        .join(newest, sa.and_(t.c.name == newest.c.name, t.c.version == newest.c.v))
        .order_by(t.c.name)
    )
    return [(_row(r), int(r.n)) for r in conn.execute(q)]
