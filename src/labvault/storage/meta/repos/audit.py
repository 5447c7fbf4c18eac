"""Rows of the audit log. The chain head row in ``vault_meta`` is locked by every append, so appends
are serialised (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.entities import AuditEvent
from labvault.storage.meta.prepared import Prepared
from labvault.storage.meta.repos.registry import as_utc
from labvault.storage.meta.tables.core import vault_meta
from labvault.storage.meta.tables.registry import audit_events

__all__ = ["HEAD_KEY", "hash_at", "insert_event", "iter_events", "lock_head", "read_head", "set_head"]

HEAD_KEY = "audit_head"
GENESIS_HASH = "0" * 64


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    return int(seq), digest


# Prepared once and run on the driver's cursor: these run on every registry write, and going through
# SQLAlchemy's execute costs more than running them.
_LOCK_HEAD = Prepared(sa.select(vault_meta.c.value).where(vault_meta.c.key == HEAD_KEY).with_for_update())
_SET_HEAD = Prepared(sa.update(vault_meta).where(vault_meta.c.key == HEAD_KEY).values(value=sa.bindparam("head")))
_EVENT_COLUMNS = ("seq", "at", "actor", "action", "subject", "before", "after", "policy_hash", "details", "prev_hash")
_INSERT_EVENT = Prepared(sa.insert(audit_events), keys=(*_EVENT_COLUMNS, "hash"))


def lock_head(conn: Connection) -> tuple[int, str]:
    """Lock the chain head for this transaction and return ``(seq, hash)`` of the last event."""
    row = _LOCK_HEAD.first(conn)
    if row is None:  # a vault migrated by hand without the seed row: start the chain
        conn.execute(sa.insert(vault_meta).values(key=HEAD_KEY, value=f"0:{GENESIS_HASH}"))
        return 0, GENESIS_HASH
    return _parse_head(row[0])


def read_head(conn: Connection, *, share_lock: bool = False) -> tuple[int, str] | None:
    stmt = sa.select(vault_meta.c.value).where(vault_meta.c.key == HEAD_KEY)
    row = conn.execute(stmt.with_for_update(read=True) if share_lock else stmt).first()
    return None if row is None else _parse_head(row[0])


_HASH_AT = Prepared(sa.select(audit_events.c.hash).where(audit_events.c.seq == sa.bindparam("seq")))


def hash_at(conn: Connection, seq: int) -> str | None:
    """The stored hash of event ``seq``; None when there is no such event."""
    row = _HASH_AT.first(conn, {"seq": seq})
    return None if row is None else str(row[0])


def set_head(conn: Connection, seq: int, digest: str) -> None:
    _SET_HEAD.run(conn, {"head": f"{seq}:{digest}"})


def insert_event(conn: Connection, event: AuditEvent, details_json: str) -> None:
    values = {name: getattr(event, name) for name in _EVENT_COLUMNS}
    values["details"] = details_json
    values["hash"] = event.hash
    _INSERT_EVENT.run(conn, values)


def iter_events(
    conn: Connection,
    *,
    subject_prefix: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> Iterator[tuple[AuditEvent, str]]:
    """Events with the raw ``details`` text (verify re-hashes what is stored, not a re-encoding)."""
    stmt = sa.select(audit_events)
    if subject_prefix is not None:
        stmt = stmt.where(audit_events.c.subject.startswith(subject_prefix, autoescape=True))
    if action is not None:
        stmt = stmt.where(audit_events.c.action == action)
    if since is not None:
        stmt = stmt.where(audit_events.c.at >= since)
    stmt = stmt.order_by(audit_events.c.seq.desc() if newest_first else audit_events.c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    for r in conn.execute(stmt).mappings():
        raw = r["details"]
        try:
            details: dict[str, Any] = json.loads(raw)
        except ValueError:
            details = {"unreadable": raw}
        yield (
            AuditEvent(
                seq=int(r["seq"]),
                at=as_utc(r["at"]) or r["at"],
                actor=r["actor"],
                action=r["action"],
                subject=r["subject"],
                before=r["before"],
                after=r["after"],
                policy_hash=r["policy_hash"],
                details=details,
                prev_hash=r["prev_hash"],
                hash=r["hash"],
            ),
            raw,
        )
