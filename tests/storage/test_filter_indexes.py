"""On SQLite the indexes a filter reads hold the run id (migration ``0010_filter_indexes``);
PostgreSQL keeps the narrower ones. A vault made before it is upgraded on open, on both, and filters
find the same runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault.services.tracking.filters import parse_filter
from labvault.storage.meta.run_filter import runs_query
from labvault.vault import Vault
from tests.older_schema import empty_metadata, ship_migrations_before

_INDEXES = {
    "run_params": ("ix_run_params_key_num_run", ["key", "num", "run_id"]),
    "run_tags": ("ix_run_tags_key_num_run", ["key", "num", "run_id"]),
    "run_latest": ("ix_run_latest_key_value_run", ["key", "value", "run_id"]),
}
_FILTERS = {
    "metrics.auc > 0.9 and params.depth = 4": {"a"},
    "params.depth >= 4 and tags.rank < 3": {"a", "c"},
    "not metrics.auc > 0.9": {"b"},
}


def _log(vault: Vault) -> None:
    for name, depth, auc, rank in (("a", 4, 0.95, 1), ("b", 4, 0.5, 5), ("c", 8, 0.99, 2)):
        run = vault.runs.create(name=name, project="bench", capture=False, tags={"rank": rank})
        vault.runs.log_params(run.id, {"depth": depth})
        vault.runs.log_metrics(run.id, [("auc", auc, 0)])
        vault.runs.finish(run.id, status="finished")
    vault.runs.close()


def test_a_vault_made_before_the_filter_indexes_is_upgraded_and_finds_the_same_runs(
    any_vault: Vault, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_metadata(any_vault, project)
    with monkeypatch.context() as patch:
        ship_migrations_before(10, tmp_path, patch)  # 0010_filter_indexes
        old = Vault.open(project)
        _log(old)
        before = {expr: {r.name for r in old.runs.list(filter=expr)} for expr in _FILTERS}
        old.close()
    assert before == _FILTERS
    new = Vault.open(project)
    try:
        assert new.meta.schema_is_current()
        inspector = sa.inspect(new.meta.engine)
        sqlite = new.meta.engine.dialect.name == "sqlite"
        for table, (name, columns) in _INDEXES.items():
            found = {i["name"]: i["column_names"] for i in inspector.get_indexes(table)}
            if sqlite:
                assert found.get(name) == columns, table
                assert name.removesuffix("_run") not in found, table  # the narrower index is gone
            else:
                assert found.get(name.removesuffix("_run")) == columns[:-1], table
                assert name not in found, table
        assert {expr: {r.name for r in new.runs.list(filter=expr)} for expr in _FILTERS} == _FILTERS
    finally:
        new.close()


def test_a_filter_on_metrics_and_params_reads_the_indexes_alone(vault: Vault) -> None:
    _log(vault)
    sql, params = runs_query(
        deleted=False,
        project="bench",
        where=parse_filter("metrics.auc > 0.9 and params.depth = 4"),
        sort=None,
        limit=None,
        sqlite=True,
    )
    with vault.meta.read() as conn:
        plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(params)))
    assert "COVERING INDEX ix_run_latest_key_value_run" in plan
    assert "COVERING INDEX ix_run_params_key_num_run" in plan
