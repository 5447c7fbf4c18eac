"""The metadata store, the whole suite on SQLite and on PostgreSQL: migrations, transactions,
error translation and the object_refs repository. SQLite-only pragmas are tested at the end."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from labvault.errors import Conflict, LockedError, StorageError, ValidationError
from labvault.refs import Digest
from labvault.storage.meta import store as store_module
from labvault.storage.meta.repos.object_refs import add_refs, iter_refs, remove_owner
from labvault.storage.meta.store import MetaStore, normalise_url
from labvault.storage.meta.tables import object_refs, vault_meta


def digest(n: int) -> Digest:
    return Digest(hashlib.sha256(b"%d" % n).hexdigest())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'meta.db'}"


@pytest.fixture
def fresh(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetaStore]:
    """A store whose schema is not created yet; short busy timeouts so lock tests are quick."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 300)
    meta = MetaStore(url)
    yield meta
    meta.dispose()


@pytest.fixture
def meta(fresh: MetaStore, tmp_path: Path) -> MetaStore:
    fresh.migrate(lock_path=tmp_path / "migrate.lock")
    return fresh


def test_migrations_create_the_schema(fresh: MetaStore, tmp_path: Path) -> None:
    assert not fresh.schema_is_current()
    fresh.migrate(lock_path=tmp_path / "migrate.lock")
    assert fresh.schema_is_current()
    tables = set(sa.inspect(fresh.engine).get_table_names())
    assert {"vault_meta", "object_refs", "alembic_version"} <= tables
    assert "0001_foundation" in fresh.known_revisions().split(",")
    with fresh.read() as conn:
        heads = {row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
    assert heads  # one head per capability branch (0001_foundation is their root)
    assert heads <= set(fresh.known_revisions().split(","))
    if not fresh.is_sqlite:  # the same patience as SQLite's busy timeout (300 ms in these tests)
        with fresh.read() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "300ms"
    fresh.migrate(lock_path=tmp_path / "migrate.lock")  # idempotent
    assert fresh.schema_is_current()


def test_a_new_migration_file_makes_the_schema_stale(meta: MetaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real = MetaStore.known_revisions()
    monkeypatch.setattr(MetaStore, "known_revisions", staticmethod(lambda: real + ",0099_future"))
    assert not meta.schema_is_current()


def test_a_schema_from_a_newer_labvault_is_a_clean_error(meta: MetaStore, tmp_path: Path) -> None:
    """A vault last migrated by a newer labvault (or a branch with more capabilities): no traceback."""
    with meta.transaction() as conn:
        # one more head than this labvault ships (every capability's migrations are heads of their own)
        conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES ('0099_from_the_future')"))
        conn.execute(sa.update(vault_meta).values(value="0001_foundation,0099_from_the_future"))
    assert not meta.schema_is_current()
    with pytest.raises(ValidationError, match="does not know") as err:
        meta.migrate(lock_path=tmp_path / "migrate.lock")
    assert err.value.exit_code == 2
    assert "upgrade labvault" in err.value.hint


def test_concurrent_migrations_are_safe(fresh: MetaStore, url: str, tmp_path: Path) -> None:
    stores = [fresh, MetaStore(url), MetaStore(url)]
    errors: list[BaseException] = []

    def migrate(s: MetaStore) -> None:
        try:
            s.migrate(lock_path=tmp_path / "migrate.lock")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert all(s.schema_is_current() for s in stores)
    for s in stores[1:]:
        s.dispose()


def test_transaction_commits_once_and_rolls_back_on_error(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        conn.execute(sa.insert(vault_meta).values(key="a", value="1"))

    def fail_after_a_write() -> None:
        with meta.transaction() as conn:
            conn.execute(sa.insert(vault_meta).values(key="b", value="2"))
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError):
        fail_after_a_write()
    with meta.read() as conn:
        keys = {row[0] for row in conn.execute(sa.select(vault_meta.c.key))}
    assert "a" in keys
    assert "b" not in keys


def test_unique_violation_is_a_conflict(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        conn.execute(sa.insert(vault_meta).values(key="k", value="1"))
    with pytest.raises(Conflict) as err, meta.transaction() as conn:
        conn.execute(sa.insert(vault_meta).values(key="k", value="2"))
    assert err.value.exit_code == 4
    assert "\n" not in str(err.value)
    assert isinstance(err.value.__cause__, sa.exc.IntegrityError)  # translated with `from`


def test_check_constraint_is_a_conflict(meta: MetaStore) -> None:
    with pytest.raises(Conflict), meta.transaction() as conn:
        add_refs(conn, "run:abcdef", [(digest(1), "nonsense")])  # type: ignore[list-item]


def test_other_database_errors_are_storage_errors(meta: MetaStore) -> None:
    with pytest.raises(StorageError) as err, meta.read() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert err.value.exit_code == 7


def test_a_driver_read_sees_committed_rows_and_translates_errors(meta: MetaStore) -> None:
    """read_driver: the same transaction rules and errors as read(), on the driver's connection."""
    with meta.transaction() as conn:
        conn.execute(sa.insert(vault_meta).values(key="seen", value="1"))
    mark = "?" if meta.is_sqlite else "%s"
    for _ in range(3):  # the connection goes back to the pool usable, after an error too
        with meta.read_driver() as driver:
            rows = driver.execute(f"SELECT value FROM vault_meta WHERE key = {mark}", ("seen",)).fetchall()
        assert [tuple(r) for r in rows] == [("1",)]
        with pytest.raises(StorageError) as err, meta.read_driver() as driver:
            driver.execute("SELECT * FROM no_such_table")
        assert err.value.exit_code == 7
        with pytest.raises(KeyError), meta.read_driver() as driver:
            raise KeyError("not a database error: raised as it is")


def test_an_unreachable_database_is_a_storage_error_for_a_driver_read_too() -> None:
    meta = MetaStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StorageError) as err, meta.read_driver():
        pass
    assert err.value.exit_code == 7
    assert "database" in err.value.hint
    meta.dispose()


def write_behind_the_lock(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        if not meta.is_sqlite:  # PostgreSQL locks rows, not the database: ask for the whole table
            conn.execute(sa.text("LOCK TABLE vault_meta IN EXCLUSIVE MODE"))
        conn.execute(sa.insert(vault_meta).values(key="other", value="2"))


def test_a_held_write_lock_is_locked_error(meta: MetaStore, url: str) -> None:
    """A writer that cannot get the lock within the timeout gets LockedError (exit 6)."""
    holder = MetaStore(url)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.transaction() as conn:
            conn.execute(sa.insert(vault_meta).values(key="held", value="1"))
            if not holder.is_sqlite:
                conn.execute(sa.text("SELECT * FROM vault_meta WHERE key = 'held' FOR UPDATE"))
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(LockedError) as err:
            write_behind_the_lock(meta)
        assert err.value.exit_code == 6
    finally:
        release.set()
        t.join(timeout=30)
        holder.dispose()


def test_unreachable_database_is_a_storage_error() -> None:
    meta = MetaStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StorageError) as err, meta.read():
        pass
    assert err.value.exit_code == 7
    assert "database" in err.value.hint
    meta.dispose()


@pytest.mark.parametrize("bad", ["mysql://x@y/z", "sqlite://relative.db", "redis://h", "nonsense"])
def test_unsupported_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        normalise_url(bad)
    assert err.value.exit_code == 2


def test_postgres_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


# -- object_refs ------------------------------------------------------------------------------


def test_object_refs_add_iter_remove(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        add_refs(conn, "data:tx@v1", [(digest(1), "tree"), (digest(2), "blob")])
        add_refs(conn, "run:abcdef", [(digest(2), "blob")])
        add_refs(conn, "run:abcdef", [])
    with meta.read() as conn:
        rows = list(iter_refs(conn))
    expected = sorted(
        [("data:tx@v1", digest(1), "tree"), ("data:tx@v1", digest(2), "blob"), ("run:abcdef", digest(2), "blob")],
        key=lambda r: (r[1].hex, r[0]),
    )
    assert sorted(rows, key=lambda r: (r[1].hex, r[0])) == expected
    assert [r[1].hex for r in rows] == sorted(r[1].hex for r in rows)  # ordered by digest
    with meta.transaction() as conn:
        assert remove_owner(conn, "data:tx@v1") == 2
        assert remove_owner(conn, "data:tx@v1") == 0  # idempotent
    with meta.read() as conn:
        assert list(iter_refs(conn)) == [("run:abcdef", digest(2), "blob")]


def test_add_refs_is_idempotent(meta: MetaStore) -> None:
    for _ in range(3):
        with meta.transaction() as conn:
            add_refs(conn, "data:x@v1", [(digest(1), "blob"), (digest(1), "blob"), (digest(2), "tree")])
    with meta.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(object_refs)).scalar() == 2


def test_add_refs_is_idempotent_under_concurrent_writers(meta: MetaStore, url: str) -> None:
    """Two transactions adding the same references at once both succeed (no lost race, no Conflict)."""
    other = MetaStore(url)
    refs = [(digest(i), "blob") for i in range(50)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def add(s: MetaStore) -> None:
        try:
            with s.transaction() as conn:
                if not s.is_sqlite:  # on SQLite, BEGIN IMMEDIATE already serialises the two
                    barrier.wait(10)
                add_refs(conn, "data:race@v1", refs)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(s,)) for s in (meta, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    other.dispose()
    assert errors == []
    with meta.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(object_refs)).scalar() == 50


def test_add_refs_takes_many_references_at_once(meta: MetaStore) -> None:
    many = [(digest(i), "blob") for i in range(40_000)]  # more than SQLite's bound-variable limit
    with meta.transaction() as conn:
        add_refs(conn, "data:big@v1", many)  # type: ignore[arg-type]
        add_refs(conn, "data:big@v1", many)  # type: ignore[arg-type]
    with meta.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(object_refs)).scalar() == 40_000


# -- SQLite specifics -------------------------------------------------------------------------


@pytest.fixture
def sqlite_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetaStore]:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 300)
    meta = MetaStore(f"sqlite:///{tmp_path / 'meta.db'}")
    meta.migrate(lock_path=tmp_path / "migrate.lock")
    yield meta
    meta.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(sqlite_meta: MetaStore) -> None:
    with sqlite_meta.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 300


def test_sqlite_default_busy_timeout_is_30_seconds(tmp_path: Path) -> None:
    meta = MetaStore(f"sqlite:///{tmp_path / 'meta.db'}")
    with meta.read() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    meta.dispose()


def test_sqlite_transactions_begin_immediate_and_reads_deferred(sqlite_meta: MetaStore) -> None:
    statements: list[str] = []
    # BEGIN goes straight to the driver (store.py), so it is seen by SQLite's trace, not SQLAlchemy's events.
    sqlite_meta.engine.dispose()
    event.listen(sqlite_meta.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append))
    with sqlite_meta.transaction() as conn:
        conn.execute(sa.select(vault_meta.c.key))
    with sqlite_meta.read() as conn:
        conn.execute(sa.select(vault_meta.c.key))
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_sqlite_write_lock_is_taken_at_begin(sqlite_meta: MetaStore, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: the lock is held from the start, so a read-then-write never fails half-way."""
    other = sqlite3.connect(tmp_path / "meta.db", timeout=0, isolation_level=None)
    with sqlite_meta.transaction() as conn:
        conn.execute(sa.select(vault_meta.c.key)).all()  # only a read so far
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again after commit
    other.execute("ROLLBACK")
    # while a read() is open, a writer can still commit (WAL readers do not block writers)
    with sqlite_meta.read() as conn:
        conn.execute(sa.select(vault_meta.c.key)).all()
        other.execute("INSERT INTO vault_meta (key, value) VALUES ('w', '1')")
    other.close()


def test_sqlite_locked_database_is_locked_error(sqlite_meta: MetaStore, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "meta.db", timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LockedError) as err, sqlite_meta.transaction():
            pass
        assert err.value.exit_code == 6
        assert err.value.hint
    finally:
        other.execute("ROLLBACK")
        other.close()
