"""The gc lock of a vault whose metadata is in PostgreSQL: one session-level advisory lock.

Writers hold it shared around each batch of object writes, gc holds it exclusively, on every machine
that uses the database: the team-wide form of the local store's ``locks/gc.lock``. PostgreSQL queues
a shared request behind a waiting exclusive one, so a steady stream of writers never starves gc.
The lock belongs to a connection kept out of the pool while it is held; a killed process's
connection closes and its lock goes with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from labvault.errors import LockedError, StorageError

if TYPE_CHECKING:
    from labvault.storage.meta.store import MetaStore

__all__ = ["GC_LOCK_KEY", "AdvisoryGcLock", "advisory_key", "key_lock"]

#: pg_advisory_lock key: "lvgclock" as a signed 64-bit integer (distinct from the migration lock).
GC_LOCK_KEY = int.from_bytes(b"lvgclock", "big", signed=True)
_LOCKED = {"55P03", "40P01"}  # lock_not_available (lock_timeout), deadlock_detected
_WRITER_TIMEOUT_S = 30.0  # as long as a writer waits for a busy database


class AdvisoryGcLock:
    """``shared()`` for writers (re-entrant per thread), ``exclusive(timeout=...)`` for gc."""

    def __init__(self, meta: Callable[[], MetaStore], *, writer_timeout: float = _WRITER_TIMEOUT_S) -> None:
        self._meta = meta
        self._writer_timeout = writer_timeout
        self._local = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._held("pg_advisory_lock_shared", "pg_advisory_unlock_shared", self._writer_timeout, "gc"):
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0

    @contextmanager
    def exclusive(self, *, timeout: float) -> Iterator[None]:
        with self._held("pg_advisory_lock", "pg_advisory_unlock", timeout, "writers on the team vault"):
            yield

    def _held(self, take: str, release: str, timeout: float, holder: str) -> contextlib.AbstractContextManager[None]:
        return _held(
            self._meta(),
            GC_LOCK_KEY,
            take,
            release,
            timeout,
            f"the team vault's gc lock is held by {holder}",
            "gc lock",
        )


def advisory_key(text: str) -> int:
    """A 64-bit advisory lock key for ``text`` (a stage's cache key, say), away from the gc and migration keys."""
    return int.from_bytes(hashlib.sha256(b"labvault-lock:" + text.encode()).digest()[:8], "big", signed=True)


def key_lock(meta: MetaStore, text: str, *, timeout: float, what: str) -> contextlib.AbstractContextManager[None]:
    """An exclusive advisory lock on ``text`` held by this session, team-wide: every machine using the
    database waits for it. A killed holder's connection closes and the lock goes with it."""
    return _held(
        meta, advisory_key(text), "pg_advisory_lock", "pg_advisory_unlock", timeout, f"{what} is held elsewhere", what
    )


@contextmanager
def _held(meta: MetaStore, key: int, take: str, release: str, timeout: float, busy: str, what: str) -> Iterator[None]:
    # SQLAlchemy is imported on first use: the vault builds the gc lock for every command,
    # and the object-only ones (``object put``) never open the metadata store otherwise.
    import sqlalchemy as sa
    from sqlalchemy import exc

    from labvault.storage.meta.store import BUSY_TIMEOUT_MS

    engine = meta.engine
    try:
        conn = engine.connect()
    except exc.SQLAlchemyError as err:
        raise StorageError(
            f"cannot reach the metadata database ({_first_line(err)})",
            hint="check that the database server is running",
        ) from err
    try:
        try:
            conn.execute(sa.text(f"SET lock_timeout = {max(1, int(timeout * 1000))}"))
            conn.execute(sa.text(f"SELECT {take}(:k)"), {"k": key})
            conn.execute(sa.text(f"SET lock_timeout = {int(BUSY_TIMEOUT_MS)}"))
            conn.commit()  # the lock is the session's; no transaction stays open while it is held
        except exc.SQLAlchemyError as err:
            if getattr(getattr(err, "orig", None), "sqlstate", None) in _LOCKED:
                raise LockedError(
                    f"{busy} (waited {timeout:g} s)", hint="wait for it to finish, then run the command again"
                ) from err
            raise StorageError(f"cannot take the {what} ({_first_line(err)})") from err
        try:
            yield
        finally:
            try:
                conn.execute(sa.text(f"SELECT {release}(:k)"), {"k": key})
                conn.commit()
            except exc.SQLAlchemyError:
                conn.invalidate()  # closing the session releases the lock all the same
    finally:
        conn.close()


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", err))
    return text.splitlines()[0] if text else type(err).__name__
