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

__all__ = ["Gate", "GateOf", "MetricAppender", "append_in"]

_COLUMNS = "run_id, key, step, ts_ms, value, kind"
#: The gates' API tokens (their columns in this order) and their runs' states.
_TOKENS = (
    'SELECT id, "user", role, created_at, created_by, expires_at, revoked_at, salt, hash FROM server_tokens '
    "WHERE id IN ({marks})"
)
_STATES = "SELECT id, status FROM runs WHERE id IN ({marks})"
#: What decides whether the rows may be written: the token's row (None when there is none) and the
#: run's status (None when there is no such run); it raises to refuse, and nothing is written.
Gate = Callable[[tuple[Any, ...] | None, str | None], None]
#: A run id, a token id and the check of what the database holds for them.
GateOf = tuple[str, str, Gate]


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
        self._conn: Any = None
        self._lock = threading.Lock()

    def append(self, rows: Sequence[MetricRow]) -> None:
        """Append ``rows`` in one transaction; durable when this returns."""
        self.append_all([(rows, None)])

    def append_all(self, jobs: Sequence[tuple[Sequence[MetricRow], GateOf | None]]) -> list[LabvaultError | None]:
        """Append the rows of every job in one transaction: one commit for many requests' points.

        A job's gate (a run id, a token id and a check) reads the token's row and the run's status in
        that transaction and hands them to the check: a refusal skips the job's rows and takes their
        place in the answer, so the authorisation and the run-state rule hold at the commit. A
        database error stores nothing of any job and is raised."""
        if all(not rows and gate is None for rows, gate in jobs):
            return [None] * len(jobs)
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._meta.engine.raw_connection()
                return self._write(jobs)
            except LabvaultError:
                raise
            except Exception as err:  # DB-API errors of either driver: translated here, once
                self._discard()
                raise _translate(err, self._meta.sqlite_path) from err

    def _write(self, jobs: Sequence[tuple[Sequence[MetricRow], GateOf | None]]) -> list[LabvaultError | None]:
        conn = self._conn
        if self._sqlite:
            # The connection is in autocommit mode (store.py); the transaction is ours.
            db = cur = conn.driver_connection
            db.execute("BEGIN IMMEDIATE")
        else:
            cur = conn.cursor()
        try:
            gates = [gate for _, gate in jobs if gate is not None]
            # Two statements for the whole batch, whatever its size: its tokens, then its runs' states.
            tokens = {row[0]: tuple(row) for row in self._select(cur, _TOKENS, {g[1] for g in gates})}
            states = {row[0]: row[1] for row in self._select(cur, _STATES, {g[0] for g in gates})}
            out: list[LabvaultError | None] = []
            passed: list[MetricRow] = []
            for rows, gate in jobs:
                if gate is not None:
                    try:
                        gate[2](tokens.get(gate[1]), states.get(gate[0]))
                    except LabvaultError as refused:
                        out.append(refused)
                        continue
                passed.extend(rows)
                out.append(None)
            params, latest = _encode(passed)
            if len(params) == 1:
                cur.execute(self._sql, params[0])
                cur.execute(self._latest_sql, latest[0])
            elif params:
                cur.executemany(self._sql, params)
                cur.executemany(self._latest_sql, latest)
            if self._sqlite:
                db.execute("COMMIT")
            else:
                conn.commit()
            return out
        except BaseException:
            if not self._sqlite:
                conn.rollback()
            elif db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if not self._sqlite:
                cur.close()

    def _select(self, cur: Any, sql: str, ids: set[str]) -> list[Any]:
        if not ids:
            return []
        marks = ", ".join(["?" if self._sqlite else "%s"] * len(ids))
        return list(cur.execute(sql.format(marks=marks), sorted(ids)).fetchall())

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
