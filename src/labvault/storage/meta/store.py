"""The metadata store: one SQLAlchemy engine, transactions, migrations, and error translation.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout; write
transactions start with ``BEGIN IMMEDIATE`` so that a read-then-write never fails half-way with
SQLITE_BUSY on the upgrade. PostgreSQL is used when the vault's database URL says so (psycopg 3).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine

from labvault.errors import Conflict, LabvaultError, LockedError, StorageError, ValidationError
from labvault.storage.locks import file_lock
from labvault.storage.meta.lean_pg import pg_errors
from labvault.storage.meta.tables import vault_meta
from labvault.storage.space import disk_full, is_full

#: The connection a transaction hands to the repositories; services name it, never SQLAlchemy.
__all__ = ["Connection", "MetaStore", "normalise_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_SCHEMA_KEY = "schema_revisions"
_PG_MIGRATION_LOCK = 0x6C61627661756C74  # "labvault": pg_advisory_lock key for migrations
BUSY_TIMEOUT_MS = 30_000
_PG_MIGRATION_WAIT_S = 300
_PG_BUSY = {"55P03", "40P01", "40001"}


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and pick the psycopg 3 driver; refuse what we do not support."""
    if url.startswith(("postgresql://", "postgres://")):
        return _check_server(url, "postgresql+psycopg://" + url.split("://", 1)[1])
    if url.startswith("postgresql+psycopg://"):
        return _check_server(url, url)
    if url.startswith("sqlite:///"):
        return url
    raise ValidationError(
        f"unsupported database URL {url.split('@')[-1]!r}",
        hint="use postgresql://user@host:port/db, or leave it unset for the embedded SQLite file",
    )


def _check_server(given: str, url: str) -> str:
    """Refuse a host or port no server can have, before a driver trips on it (UnicodeError, ValueError)."""
    try:
        parsed = sa.engine.make_url(url)
        for host in (parsed.host or "").split(","):
            if host and not host.startswith("/"):  # a socket folder is a path, not a name
                host.encode("idna")
        port = parsed.port
    except (ValueError, exc.ArgumentError):  # UnicodeError is a ValueError
        port = -1
    if port is not None and not 0 < port < 65536:
        where = given.rsplit("@", 1)[-1]  # never the password
        shown = where if where.isascii() and where.isprintable() else ascii(where)
        raise ValidationError(
            f"invalid database URL: no server can be named by {shown[:120]!r}",
            hint="use postgresql://user@host:port/db, or leave it unset for the embedded SQLite file",
        )
    return url


def _translate(err: Exception, path: Path | None = None) -> LabvaultError:
    text = str(getattr(err, "orig", err)).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, exc.IntegrityError):
        return Conflict(f"the change conflicts with a stored record ({text})")
    low = text.lower()
    # PostgreSQL says it with a SQLSTATE: lock_not_available (lock_timeout, NOWAIT), deadlock_detected,
    # serialization_failure; their messages ("canceling statement due to lock timeout") name no "lock"ed.
    sqlstate = getattr(getattr(err, "orig", None), "sqlstate", None)
    if sqlstate in _PG_BUSY or "locked" in low or "busy" in low or "could not obtain lock" in low or "deadlock" in low:
        return LockedError(f"the metadata database is busy ({text})")
    # SQLite's "disk I/O error" is often a WAL it could not grow: the free space tells
    if "disk is full" in low or "no space" in low or ("disk i/o error" in low and path and is_full(path)):
        return disk_full(path or "the database", "using the metadata database")
    if isinstance(err, exc.OperationalError) and ("connect" in low or "connection" in low):
        return StorageError(
            f"cannot reach the metadata database ({text})", hint="check that the database server is running"
        )
    return StorageError(f"metadata database error ({text})", hint="run `labvault fsck`; report it if it persists")


class MetaStore:
    """Owns the engine; hands out connections inside transactions. Repositories never commit."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # Where a full disk is looked for when SQLite reports an I/O error
        self.sqlite_path = Path(self.url.removeprefix("sqlite:///")) if self.is_sqlite else None
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = sa.create_engine(self.url, **kwargs)
        except (exc.ArgumentError, ImportError) as err:
            raise ValidationError(f"cannot use database URL: {err}", hint="pip install 'labvault[postgres]'") from err
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _configure_postgres(self.engine)
        self._local = threading.local()

    @classmethod
    def sqlite(cls, path: Path) -> MetaStore:
        return cls(f"sqlite:///{path}")

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One read-write unit of work; commits once at the end, rolls back on any error."""
        with self._connect(write=True) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a deferred BEGIN on SQLite, so readers never take the write lock)."""
        with self._connect(write=False) as conn:
            yield conn

    @contextmanager
    def read_driver(self) -> Iterator[Any]:
        """A read-only transaction on the driver's own connection (``sqlite3``, or psycopg), from the
        same pool, for the readers that write their statements as text (``lean_records``): a search
        spent more in SQLAlchemy's connection and transaction objects than in one of its statements.
        A deferred BEGIN on SQLite, as :meth:`read`; PostgreSQL begins with the first statement."""
        try:
            pooled = self.engine.raw_connection()
        except Exception as err:  # the pool raises the driver's own error when it cannot connect
            if isinstance(err, (exc.SQLAlchemyError, sqlite3.Error, *pg_errors())):
                raise _translate(_as_sqlalchemy(err), self.sqlite_path) from err
            raise
        try:
            driver: Any = pooled.driver_connection
            try:
                if self.is_sqlite:
                    driver.execute("BEGIN")
                yield driver
                driver.commit()
            except BaseException:
                driver.rollback()
                raise
        except Exception as err:
            if isinstance(err, (sqlite3.Error, *pg_errors())):
                raise _translate(_as_sqlalchemy(err), self.sqlite_path) from err
            raise
        finally:
            pooled.close()  # back to the pool

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(labvault_write=write)
                with conn.begin():
                    yield conn
        except exc.SQLAlchemyError as err:
            raise _translate(err, self.sqlite_path) from err

    def dispose(self) -> None:
        self.engine.dispose()

    def quick_check(self) -> str:
        """SQLite's own consistency verdict on the database file ("ok" when sound); PostgreSQL: "ok"."""
        if not self.is_sqlite:
            return "ok"
        with self.read() as conn:
            return str(conn.execute(sa.text("PRAGMA quick_check")).scalar())

    # -- schema -------------------------------------------------------------------------------
    @staticmethod
    def known_revisions() -> str:
        """A fingerprint of the migrations shipped with this labvault (cheap: a directory listing)."""
        names = sorted(n for n in os.listdir(_MIGRATIONS / "versions") if n.endswith(".py") and n[0] != "_")
        return ",".join(n[:-3] for n in names)

    def schema_is_current(self) -> bool:
        try:
            with self.read() as conn:
                row = conn.execute(sa.select(vault_meta.c.value).where(vault_meta.c.key == _SCHEMA_KEY)).first()
        except StorageError:
            return False
        return row is not None and row[0] == self.known_revisions()

    def migrate(self, *, lock_path: Path | None = None) -> None:
        """Bring the schema to the newest revision, under a lock so concurrent callers are safe."""
        if self.is_sqlite:
            if lock_path is None:
                raise ValueError("migrating a SQLite database needs lock_path")
            with file_lock(lock_path, timeout=120, what="the vault's database migration"):
                self._migrate_locked()
        else:
            try:
                with self.engine.connect() as conn:
                    # Waiting for another process's migration is expected to take longer than a row lock.
                    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_PG_MIGRATION_WAIT_S}s'"))
                    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    try:
                        self._migrate_locked()
                    finally:
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                        conn.commit()
            except exc.SQLAlchemyError as err:
                raise _translate(err, self.sqlite_path) from err

    def _migrate_locked(self) -> None:
        if self.schema_is_current():
            return
        # Alembic is imported here only: it is slow to import and needed once per upgrade.
        from alembic import command
        from alembic.config import Config
        from alembic.util import CommandError

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self.engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "heads")
                conn.commit()
            with self.transaction() as conn:
                revisions = self.known_revisions()
                updated = conn.execute(
                    sa.update(vault_meta).where(vault_meta.c.key == _SCHEMA_KEY).values(value=revisions)
                )
                if updated.rowcount == 0:
                    conn.execute(sa.insert(vault_meta).values(key=_SCHEMA_KEY, value=revisions))
        except exc.SQLAlchemyError as err:
            raise _translate(err, self.sqlite_path) from err
        except CommandError as err:
            # The database was migrated by a newer labvault (or one with capabilities this one lacks).
            raise ValidationError(
                f"the vault's database has a schema this labvault does not know ({err})",
                hint="upgrade labvault to the version that last wrote this vault",
            ) from err


def _as_sqlalchemy(err: Exception) -> Exception:
    """A driver's error as SQLAlchemy raises it (OperationalError, IntegrityError...), which _translate reads."""
    if isinstance(err, exc.SQLAlchemyError):
        return err
    base = sqlite3.Error if isinstance(err, sqlite3.Error) else pg_errors()[0]
    wrapped: Exception = exc.DBAPIError.instance(None, None, err, base)
    return wrapped


def _configure_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The same patience as SQLite's busy timeout: waiting longer for a lock is LockedError (exit 6),
        # not a command that hangs forever behind another client's open transaction.
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = {int(BUSY_TIMEOUT_MS)}")
        dbapi_conn.commit()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's own BEGIN is always DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a commit survives the process being killed; power-loss durability is
        # `synchronous = FULL` (docs/design/storage-format.md).
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get("labvault_write", True) else "BEGIN"
        # On the driver's connection: a statement through SQLAlchemy costs ten times what BEGIN does.
        try:
            conn.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
        except sqlite3.Error as err:
            raise exc.DBAPIError.instance(statement, None, err, sqlite3.Error) from err
