"""The lean reader on PostgreSQL: psycopg directly, without SQLAlchemy.

Importing psycopg costs about 0.15 s of CPU, SQLAlchemy and the repos about 0.35 s more: a read
command on a team vault answers in well under 0.6 s this way. The statements are the SQLite
reader's (``?`` placeholders become ``%s``: none of them holds a literal ``?`` or ``%``), run in
one read-only, repeatable-read transaction, so every query of a command sees one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from labvault.errors import LabvaultError, LockedError, StorageError

__all__ = ["PgRow", "connect", "pg_errors", "translate_pg_error"]

_CONNECT_TIMEOUT_S = 10
_LOCK_TIMEOUT_MS = 30_000  # store.BUSY_TIMEOUT_MS: the full path's patience
_PG_BUSY = {"55P03", "40P01", "40001"}  # store._PG_BUSY


class PgRow(Sequence[Any]):
    """A row readable by position and by column name, as ``sqlite3.Row`` is."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: Any) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)


def _row_factory(cursor: Any) -> Any:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: PgRow(names, values)


def connect(url: str) -> Any | None:
    """A psycopg connection in a read-only snapshot, or None when psycopg or the server is not there
    (the full path then reports it in its words)."""
    try:
        import psycopg
    except ImportError:
        return None
    conninfo = "postgresql://" + url.split("://", 1)[1]
    try:
        conn = psycopg.connect(conninfo, connect_timeout=_CONNECT_TIMEOUT_S, row_factory=_row_factory)
    except psycopg.Error:
        return None
    # The first statement begins the transaction with these settings.
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        conn.execute(f"SET lock_timeout = {_LOCK_TIMEOUT_MS}")
    except psycopg.Error:
        conn.close()
        return None
    return conn


def pg_errors() -> tuple[type[Exception], ...]:
    """psycopg's error base, once it is imported (a SQLite command never imports it)."""
    import sys

    module = sys.modules.get("psycopg")
    return (module.Error,) if module is not None else ()


def translate_pg_error(err: Exception) -> LabvaultError:
    """The errors ``store._translate`` makes of the same PostgreSQL failures, with the same words."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    low = text.lower()
    if getattr(err, "sqlstate", None) in _PG_BUSY or "could not obtain lock" in low or "deadlock" in low:
        return LockedError(f"the metadata database is busy ({text})")
    if "connect" in low or "connection" in low:
        return StorageError(
            f"cannot reach the metadata database ({text})", hint="check that the database server is running"
        )
    return StorageError(f"metadata database error ({text})", hint="run `labvault fsck`; report it if it persists")
