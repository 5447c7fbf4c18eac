"""Rows that say which objects the metadata points at; fsck and gc follow them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from labvault.entities import utcnow
from labvault.refs import Digest
from labvault.storage.meta.prepared import Prepared
from labvault.storage.meta.tables import object_refs

__all__ = ["add_refs", "iter_refs", "remove_owner"]

RefKind = Literal["blob", "tree"]


def add_refs(conn: Connection, owner: str, refs: Iterable[tuple[Digest, RefKind]]) -> None:
    """Record that ``owner`` points at these objects (idempotent)."""
    now = utcnow()
    rows = {d.hex: kind for d, kind in refs}
    if not rows:
        return
    _add_statement(conn.dialect.name).run_many(
        conn, [{"owner": owner, "digest": h, "kind": k, "created_at": now} for h, k in rows.items()]
    )


_ADD: dict[str, Prepared] = {}


def _add_statement(dialect: str) -> Prepared:
    """INSERT ... ON CONFLICT DO NOTHING, not select-then-insert: two transactions adding the same
    reference at once (READ COMMITTED on PostgreSQL) must both succeed, not lose a race. Prepared once
    per dialect (storage/meta/prepared.py): every registration and promotion adds references."""
    statement = _ADD.get(dialect)
    if statement is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = _ADD[dialect] = Prepared(
            insert(object_refs).on_conflict_do_nothing(index_elements=["owner", "digest"]),
            keys=("owner", "digest", "kind", "created_at"),
        )
    return statement


def remove_owner(conn: Connection, owner: str) -> int:
    return conn.execute(sa.delete(object_refs).where(object_refs.c.owner == owner)).rowcount


def iter_refs(conn: Connection) -> Iterator[tuple[str, Digest, RefKind]]:
    for owner, digest, kind in conn.execute(
        sa.select(object_refs.c.owner, object_refs.c.digest, object_refs.c.kind).order_by(object_refs.c.digest)
    ):
        yield owner, Digest(digest), kind
