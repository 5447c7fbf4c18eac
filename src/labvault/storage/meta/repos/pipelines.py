"""Rows of ``pipeline_cache`` and ``pipeline_tags``. Repos never commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from labvault.storage.meta.tables.pipelines import pipeline_cache, pipeline_tags

__all__ = ["cached_runs", "get_cached", "get_tag", "insert_cached", "insert_tag", "list_tags"]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def get_cached(conn: Connection, key: str) -> dict[str, Any] | None:
    """``{path: [sha256 hex, kind]}`` stored under a stage key, or None."""
    row = conn.execute(sa.select(pipeline_cache.c.outs).where(pipeline_cache.c.key == key)).first()
    if row is None:
        return None
    outs = json.loads(row[0])
    return outs if isinstance(outs, dict) else None


def cached_runs(conn: Connection, keys: list[str]) -> dict[str, str]:
    """``{key: run id}``: the run that computed each cached key (keys without a row or a run are left out)."""
    out: dict[str, str] = {}
    for start in range(0, len(keys), 500):  # bounded IN lists
        chunk = keys[start : start + 500]
        rows = conn.execute(
            sa.select(pipeline_cache.c.key, pipeline_cache.c.run_id).where(pipeline_cache.c.key.in_(chunk))
        )
        out.update({str(k): str(r) for k, r in rows if r})
    return out


def insert_cached(
    conn: Connection, *, key: str, stage: str, outs: dict[str, list[str]], run_id: str | None, user: str, now: datetime
) -> None:
    """Idempotent: two processes that computed the same key both succeed; the first row stays."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(pipeline_cache)
        .values(
            key=key,
            stage=stage,
            outs=json.dumps(outs, sort_keys=True),
            run_id=run_id,
            created_at=now,
            created_by=user,
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )


def insert_tag(conn: Connection, row: dict[str, Any]) -> bool:
    """False when the name is taken (tags are immutable)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    result = conn.execute(insert(pipeline_tags).values(**row).on_conflict_do_nothing(index_elements=["name"]))
    return bool(result.rowcount)


def _tag(r: Any) -> dict[str, Any]:
    return {
        "name": r.name,
        "definition": r.definition,
        "lock": r.lock,
        "commit": r.commit,
        "message": r.message,
        "created_at": _utc(r.created_at),
        "created_by": r.created_by,
    }


def get_tag(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(pipeline_tags).where(pipeline_tags.c.name == name)).first()
    return _tag(row) if row is not None else None


def list_tags(conn: Connection) -> list[dict[str, Any]]:
    return [_tag(r) for r in conn.execute(sa.select(pipeline_tags).order_by(pipeline_tags.c.created_at.desc()))]


def tags_by_definition(conn: Connection, definitions: list[str]) -> dict[str, list[str]]:
    """``{definition hex: [tag names, newest first]}`` for the definitions that have tags."""
    out: dict[str, list[str]] = {}
    if not definitions:
        return out
    stmt = (
        sa.select(pipeline_tags.c.definition, pipeline_tags.c.name)
        .where(pipeline_tags.c.definition.in_(sorted(set(definitions))[:1000]))
        .order_by(pipeline_tags.c.created_at.desc())
    )
    for row in conn.execute(stmt):
        out.setdefault(row.definition, []).append(row.name)
    return out
