"""Prepared statements: the same rows, values and errors as SQLAlchemy's own execute, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault.errors import Conflict
from labvault.storage.meta.prepared import Prepared
from labvault.storage.meta.store import MetaStore
from labvault.storage.meta.tables import object_refs, vault_meta

AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
_INSERT_REF = Prepared(sa.insert(object_refs), keys=("owner", "digest", "kind", "created_at"))
_SELECT_REF_CORE = sa.select(object_refs.c.owner, object_refs.c.created_at.label("at")).where(
    object_refs.c.digest == sa.bindparam("digest")
)
_SELECT_REF = Prepared(_SELECT_REF_CORE)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaStore]:
    url = str(request.getfixturevalue("pg_url")) if request.param == "postgres" else f"sqlite:///{tmp_path / 'm.db'}"
    store = MetaStore(url)
    store.migrate(lock_path=tmp_path / "migrate.lock")
    yield store
    store.dispose()


def test_an_insert_stores_what_sqlalchemy_stores(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        _INSERT_REF.run(conn, {"owner": "prepared", "digest": "a" * 64, "kind": "blob", "created_at": AT})
        conn.execute(sa.insert(object_refs).values(owner="core", digest="b" * 64, kind="blob", created_at=AT))
    with meta.read() as conn:
        # The raw stored values (SQLite keeps datetimes as text) are the same, not just equal once parsed.
        stored = conn.exec_driver_sql("SELECT owner, created_at FROM object_refs ORDER BY owner").all()
    assert [r[0] for r in stored] == ["core", "prepared"]
    assert stored[0][1] == stored[1][1]


def test_mapping_converts_values_like_sqlalchemy(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        _INSERT_REF.run_many(
            conn,
            [
                {"owner": "x", "digest": "c" * 64, "kind": "tree", "created_at": AT},
                {"owner": "y", "digest": "d" * 64, "kind": "blob", "created_at": AT},
            ],
        )
    with meta.read() as conn:
        ours = _SELECT_REF.mapping(conn, {"digest": "c" * 64})
        theirs = conn.execute(_SELECT_REF_CORE, {"digest": "c" * 64}).mappings().one()
        assert _SELECT_REF.mapping(conn, {"digest": "e" * 64}) is None
        assert _SELECT_REF.first(conn, {"digest": "d" * 64}) is not None
    assert ours == dict(theirs)
    assert ours is not None
    assert isinstance(ours["at"], datetime)


def test_values_written_into_the_statement_are_bound_too(meta: MetaStore) -> None:
    with meta.transaction() as conn:
        conn.execute(sa.insert(vault_meta).values(key="prepared-test", value="v1"))
        query = Prepared(sa.select(vault_meta.c.value).where(vault_meta.c.key == "prepared-test").limit(1))
        assert query.first(conn) == ("v1",)
        update = Prepared(
            sa.update(vault_meta).where(vault_meta.c.key == "prepared-test").values(value=sa.bindparam("v"))
        )
        assert update.run(conn, {"v": "v2"}) == 1
        assert query.all(conn) == [("v2",)]


def test_driver_errors_are_translated_like_any_other(meta: MetaStore) -> None:
    row = {"owner": "dup", "digest": "f" * 64, "kind": "blob", "created_at": AT}
    with meta.transaction() as conn:
        _INSERT_REF.run(conn, row)
    with pytest.raises(Conflict), meta.transaction() as conn:
        _INSERT_REF.run(conn, row)


def test_expanding_parameters_are_refused(meta: MetaStore) -> None:
    query = Prepared(sa.select(vault_meta.c.value).where(vault_meta.c.key.in_(sa.bindparam("keys", expanding=True))))
    with pytest.raises(ValueError, match="expanding"), meta.read() as conn:
        query.all(conn, {"keys": ["a"]})
