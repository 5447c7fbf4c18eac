"""Rows of the team server's tokens and idempotency keys <-> entities. Functions never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.entities.access import ApiToken
from labvault.storage.meta.repos.registry import as_utc, insert_or_ignore
from labvault.storage.meta.tables.access import server_requests, server_tokens

__all__ = [
    "claim_request",
    "finish_request",
    "insert_token",
    "list_tokens",
    "release_request",
    "revoke_token",
    "token_from_columns",
    "token_secret_hash",
]


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        user=row.user,
        role=row.role,
        created_at=as_utc(row.created_at) or row.created_at,
        created_by=row.created_by,
        expires_at=as_utc(row.expires_at),
        revoked_at=as_utc(row.revoked_at),
    )


def _moment(value: Any) -> datetime | None:
    """A timestamp read through the driver itself: SQLite gives the text SQLAlchemy stored."""
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def token_from_columns(values: tuple[Any, ...]) -> tuple[ApiToken, str, str]:
    """A token, its salt and its hash from the driver's row of ``id, user, role, created_at,
    created_by, expires_at, revoked_at, salt, hash`` (the hot log route reads it with raw SQL)."""
    token_id, user, role, created_at, created_by, expires_at, revoked_at, salt, digest = values
    created = _moment(created_at)
    if created is None:
        raise ValueError("a token without created_at")
    token = ApiToken(token_id, user, role, created, created_by, _moment(expires_at), _moment(revoked_at))
    return token, salt, digest


def insert_token(conn: Connection, token: ApiToken, *, salt: str, digest: str) -> None:
    conn.execute(
        sa.insert(server_tokens).values(
            id=token.id,
            user=token.user,
            role=token.role,
            salt=salt,
            hash=digest,
            created_at=token.created_at,
            created_by=token.created_by,
            expires_at=token.expires_at,
            revoked_at=None,
        )
    )


def token_secret_hash(conn: Connection, token_id: str) -> tuple[ApiToken, str, str] | None:
    """The token with this id, its salt and its stored hash; None when there is none."""
    row = conn.execute(sa.select(server_tokens).where(server_tokens.c.id == token_id)).first()
    return None if row is None else (_token(row), row.salt, row.hash)


def list_tokens(conn: Connection) -> list[ApiToken]:
    rows = conn.execute(sa.select(server_tokens).order_by(server_tokens.c.created_at, server_tokens.c.id))
    return [_token(r) for r in rows]


def revoke_token(conn: Connection, token_id: str, now: datetime) -> bool:
    """Revoke; False when there is no such token or it was revoked already."""
    done = conn.execute(
        sa.update(server_tokens)
        .where(server_tokens.c.id == token_id, server_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(done.rowcount)


def claim_request(
    conn: Connection, scope: str, key: str, now: datetime, *, stale_before: datetime
) -> tuple[str, str | None] | None:
    """Claim ``(scope, key)``: None when this call claimed it, else the stored ``(state, result)``.

    A pending claim made before ``stale_before`` was left by a server that died in the middle: it is
    taken over (compare-and-set on its time, so two retries cannot both take it).
    """
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    inserted = conn.execute(
        insert_or_ignore(conn, server_requests)
        .values(scope=scope, key=key, state="pending", result=None, created_at=now)
        .on_conflict_do_nothing()
        .returning(server_requests.c.key)
    ).first()
    if inserted is not None:
        return None
    where = (server_requests.c.scope == scope, server_requests.c.key == key)
    row = conn.execute(
        sa.select(server_requests.c.state, server_requests.c.result, server_requests.c.created_at).where(*where)
    ).first()
    if row is None:
        return None
    claimed_at = as_utc(row.created_at)
    if row.state == "pending" and claimed_at is not None and claimed_at < stale_before:
        taken = conn.execute(
            sa.update(server_requests)
            .where(*where, server_requests.c.state == "pending", server_requests.c.created_at == row.created_at)
            .values(created_at=now)
            .returning(server_requests.c.key)
        ).first()
        if taken is not None:
            return None
    return (str(row.state), row.result)


def finish_request(conn: Connection, scope: str, key: str, result: str) -> None:
    conn.execute(
        sa.update(server_requests)
        .where(server_requests.c.scope == scope, server_requests.c.key == key)
        .values(state="done", result=result)
    )


def release_request(conn: Connection, scope: str, key: str) -> None:
    """Forget a claim whose request failed, so that a retry runs it again."""
    conn.execute(
        sa.delete(server_requests).where(
            server_requests.c.scope == scope, server_requests.c.key == key, server_requests.c.state == "pending"
        )
    )
