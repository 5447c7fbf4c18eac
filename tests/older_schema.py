"""A vault as an older labvault left it: its metadata emptied, then migrated by fewer migrations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault.storage.meta import store as store_module
from labvault.vault import Vault

__all__ = ["empty_metadata", "ship_migrations_before"]


def empty_metadata(vault: Vault, project: Path) -> str | None:
    """Close ``vault`` and empty its metadata store: the SQLite file, or this test's own PostgreSQL
    schema (the ``pg_url`` fixture's search_path). Returns the database URL (None for SQLite)."""
    url = vault.config.database_url
    vault.close()
    if url is None:
        (project / ".labvault" / "meta.db").unlink()
        return None
    engine = sa.create_engine(store_module.normalise_url(url))
    with engine.begin() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        assert str(schema).startswith("lv_test_")
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return url


def ship_migrations_before(number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store ship the migrations as they were before the one numbered ``number``."""
    old = tmp_path / "old_migrations"

    def _from_number_on(_folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or (n[:4].isdigit() and int(n[:4]) >= number)}

    shutil.copytree(store_module._MIGRATIONS, old, ignore=_from_number_on)
    monkeypatch.setattr(store_module, "_MIGRATIONS", old)
