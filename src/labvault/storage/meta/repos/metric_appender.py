"""The hot path of tracking: appending metric points, one durable transaction per call.

A run's handle keeps one DB-API connection and writes with a prepared INSERT (``executemany`` for
a batch) between a bare ``BEGIN IMMEDIATE``/``COMMIT`` on SQLite, or psycopg's own transaction on
PostgreSQL. That skips the pool checkout and statement compilation of a SQLAlchemy unit of work,
which otherwise dominate a one-row insert. The commit is the durability point: WAL with
``synchronous = NORMAL`` survives the process being killed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labvault.errors import LabvaultError, LockedError, NotFound, StorageError
from labvault.storage.meta.repos.runs import MetricRow, encode_metric
from labvault.storage.meta.store import Connection, MetaStore
from labvault.storage.space import disk_full, is_full

__all__ = ["Gate", "MetricAppender", "append_in"]

_COLUMNS = "run_id, key, step, ts_ms, value, kind"
#: The API token (its columns in this order) and the run's status, in one statement.
_GATE = (
    'SELECT t.id, t."user", t.role, t.created_at, t.created_by, t.expires_at, t.revoked_at, t.salt, t.hash, '
    "(SELECT status FROM runs WHERE id = {mark}) FROM server_tokens t WHERE t.id = {mark}"
)
#: What decides whether the rows may be written: the token's row (None when there is none) and the
#: run's status (None when there is no such run); it raises to refuse, and nothing is written.
Gate = Callable[[tuple[Any, ...] | None, str | None], None]


def _translate(err: Exception, path: Path | None = None) -> LabvaultError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    low = text.lower()
    if "foreign key" in low:
        return NotFound(f"the run does not exist ({text})", hint="list runs with `labvault runs list`")
    if "locked" in low or "busy" in low or "deadlock" in low:
        return LockedError(f"the metadata database is busy ({text})")
    if "disk is full" in low or "no space" in low or ("disk i/o error" in low and path and is_full(path)):
        return disk_full(path or "the database", "writing metrics")
    return StorageError(f"metadata database error while writing metrics ({text})")


class MetricAppender:
    """Appends metric rows on a connection of its own; safe to share between threads."""

    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta
        self._sqlite = meta.is_sqlite
        mark = "?" if self._sqlite else "%s"
        self._sql = f"INSERT INTO run_metrics ({_COLUMNS}) VALUES ({', '.join([mark] * 6)})"
        self._latest_sql = (
            f"INSERT INTO run_latest (run_id, key, step, value, kind) VALUES ({', '.join([mark] * 5)}) "
            "ON CONFLICT (run_id, key) DO UPDATE SET step = excluded.step, value = excluded.value, "
            "kind = excluded.kind WHERE excluded.step >= run_latest.step"
        )
        self._gate_sql = _GATE.format(mark=mark)
        self._conn: Any = None
        self._lock = threading.Lock()

    def append(self, rows: Sequence[MetricRow], *, gate: tuple[str, str, Gate] | None = None) -> None:
        """Append ``rows`` in one transaction. With ``gate`` (a run id, a token id and a check), the
        token's row and the run's status are read first in the same transaction and handed to the
        check, which may refuse: the authorisation and the run-state rule hold at the commit."""
        params, latest = _encode(rows)
        if not params and gate is None:
            return
        first = None if gate is None else (self._gate_sql, (gate[0], gate[1]), gate[2])
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._meta.engine.raw_connection()
                if self._sqlite:
                    self._append_sqlite(self._conn.driver_connection, params, latest, first)
                else:
                    self._append_pg(self._conn, params, latest, first)
            except LabvaultError:
                raise
            except Exception as err:  # DB-API errors of either driver: translated here, once
                self._discard()
                raise _translate(err, self._meta.sqlite_path) from err

    def _append_sqlite(
        self, db: Any, params: list[tuple[Any, ...]], latest: list[tuple[Any, ...]], first: _First | None
    ) -> None:
        # The connection is in autocommit mode (store.py); the transaction is ours.
        db.execute("BEGIN IMMEDIATE")
        try:
            if first is not None:
                _pass(db.execute(first[0], first[1]).fetchone(), first[2])
            if len(params) == 1:
                db.execute(self._sql, params[0])
                db.execute(self._latest_sql, latest[0])
            elif params:
                db.executemany(self._sql, params)
                db.executemany(self._latest_sql, latest)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _append_pg(
        self, conn: Any, params: list[tuple[Any, ...]], latest: list[tuple[Any, ...]], first: _First | None
    ) -> None:
        cur = conn.cursor()
        try:
            if first is not None:
                cur.execute(first[0], first[1])
                _pass(cur.fetchone(), first[2])
            if len(params) == 1:
                cur.execute(self._sql, params[0])
                cur.execute(self._latest_sql, latest[0])
            elif params:
                cur.executemany(self._sql, params)
                cur.executemany(self._latest_sql, latest)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.close()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                conn.invalidate()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


_First = tuple[str, tuple[str, str], Gate]


def _pass(row: Any, gate: Gate) -> None:
    gate(None if row is None else tuple(row[:9]), None if row is None else row[9])


def _encode(rows: Sequence[MetricRow]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows to insert, and the last point of each (run, key) by step, in sorted key order."""
    params = [(r, k, s, t, *encode_metric(v)) for r, k, s, t, v in rows]
    last: dict[tuple[str, str], tuple[Any, ...]] = {}
    for r, k, s, _t, value, kind in params:
        prev = last.get((r, k))
        if prev is None or s >= prev[2]:
            last[(r, k)] = (r, k, s, value, kind)
    return params, [last[rk] for rk in sorted(last)]


def append_in(conn: Connection, rows: Sequence[MetricRow]) -> None:
    """Append metric rows inside the caller's transaction, for a write that must commit with other rows
    (a log request and its idempotency key). Same statements as :class:`MetricAppender`."""
    params, latest = _encode(rows)
    if not params:
        return
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    conn.exec_driver_sql(f"INSERT INTO run_metrics ({_COLUMNS}) VALUES ({', '.join([mark] * 6)})", params)
    conn.exec_driver_sql(
        f"INSERT INTO run_latest (run_id, key, step, value, kind) VALUES ({', '.join([mark] * 5)}) "
        "ON CONFLICT (run_id, key) DO UPDATE SET step = excluded.step, value = excluded.value, "
        "kind = excluded.kind WHERE excluded.step >= run_latest.step",
        latest,
    )
