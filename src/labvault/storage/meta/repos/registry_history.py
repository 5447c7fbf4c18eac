"""Rows of the registry's history: alias moves (what ``models history`` lists and rollback replays)
and approvals. Functions take a connection; they never commit."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.entities import AliasMove
from labvault.storage.meta.prepared import Prepared
from labvault.storage.meta.repos.registry import as_utc, insert_or_ignore
from labvault.storage.meta.tables.registry import (
    registry_alias_moves,
    registry_approvals,
    registry_models,
    registry_versions,
)

__all__ = ["add_approval", "approvers", "insert_move", "list_moves", "move_targets"]

_VERSIONS = registry_versions
_MOVES = registry_alias_moves
_INSERT_MOVE = Prepared(sa.insert(_MOVES), keys=[c.key for c in _MOVES.columns if c.key != "id"])


def insert_move(conn: Connection, **values: Any) -> None:
    values = {**values, "gates": json.dumps(values.get("gates") or [], sort_keys=True)}
    _INSERT_MOVE.run(conn, values)


def list_moves(conn: Connection, model: int, alias: str | None = None) -> list[AliasMove]:
    before = _VERSIONS.alias("before_v")
    after = _VERSIONS.alias("after_v")
    stmt = (
        sa.select(
            _MOVES,
            registry_models.c.project,
            registry_models.c.name.label("model"),
            before.c.version.label("before"),
            after.c.version.label("after"),
        )
        .join(registry_models, registry_models.c.id == _MOVES.c.model_id)
        .outerjoin(before, before.c.id == _MOVES.c.from_version_id)
        .outerjoin(after, after.c.id == _MOVES.c.to_version_id)
        .where(_MOVES.c.model_id == model)
        .order_by(_MOVES.c.id)
    )
    if alias is not None:
        stmt = stmt.where(_MOVES.c.alias == alias)
    return [
        AliasMove(
            project=r["project"],
            model=r["model"],
            alias=r["alias"],
            action=r["action"],
            before=r["before"],
            after=r["after"],
            at=as_utc(r["at"]) or r["at"],
            actor=r["actor"],
            reason=r["reason"],
            policy_hash=r["policy_hash"],
            gates=tuple(json.loads(r["gates"])),
            audit_seq=int(r["audit_seq"]),
        )
        for r in conn.execute(stmt).mappings()
    ]


def move_targets(conn: Connection, model: int, alias: str) -> list[tuple[str, int | None]]:
    """``(action, to_version_id)`` of every move of an alias, oldest first (rollback replays them)."""
    rows = conn.execute(
        sa.select(_MOVES.c.action, _MOVES.c.to_version_id)
        .where(_MOVES.c.model_id == model, _MOVES.c.alias == alias)
        .order_by(_MOVES.c.id)
    )
    return [(r[0], None if r[1] is None else int(r[1])) for r in rows]


# -- approvals ----------------------------------------------------------------------------------
def add_approval(
    conn: Connection, version_id: int, alias: str, *, actor: str, now: datetime, message: str | None
) -> bool:
    """True if recorded; False if this user had already approved (approvals count once per user)."""
    stmt = insert_or_ignore(conn, registry_approvals).values(
        version_id=version_id, alias=alias, actor=actor, at=now, message=message
    )
    result = conn.execute(
        stmt.on_conflict_do_nothing(index_elements=["version_id", "alias", "actor"]).returning(
            registry_approvals.c.actor
        )
    )
    return result.first() is not None


def approvers(conn: Connection, version_id: int, alias: str) -> list[str]:
    rows = conn.execute(
        sa.select(registry_approvals.c.actor)
        .where(registry_approvals.c.version_id == version_id, registry_approvals.c.alias == alias)
        .order_by(registry_approvals.c.actor)
    )
    return [r[0] for r in rows]
