"""A finished run's chart envelope is computed once, when it ends, and stored (``run_envelopes``): the
run page's first view reads it instead of grouping every point of each long history. On SQLite and
PostgreSQL; the page and the end go through the server's app.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from labvault.server.app import create_app
from labvault.server.ui.chart_data import CHART_BUCKETS
from labvault.storage.meta.repos.runs import metric_envelope
from labvault.storage.meta.tables.envelopes import run_envelopes
from labvault.vault import Vault
from tests.older_schema import empty_metadata, ship_migrations_before

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

LONG = 2 * CHART_BUCKETS + 500  # past the bucket count's 2 points per range: downsampled
MARK = 12345.25  # a value no history holds: seen on the page only if the stored row was read


@pytest.fixture
def app(any_vault: Vault) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(any_vault, no_auth=True), base_url="http://127.0.0.1") as client:
        yield client


def _run(vault: Vault, project: Path) -> str:
    run_id = vault.runs.create(project="env", name="long", cwd=project, capture=False).id
    vault.runs.log_metrics(run_id, [("loss", float((s * 7919) % 1009), s) for s in range(LONG)])
    vault.runs.log_metrics(run_id, [("auc", 0.5 + s / 100, s) for s in range(10)])
    return run_id


def _stored(vault: Vault, run_id: str) -> dict[str, str]:
    t = run_envelopes.c
    with vault.meta.read() as conn:
        return dict(conn.execute(sa.select(t.key, t.points).where(t.run_id == run_id)).all())


def _live(vault: Vault, run_id: str) -> dict[str, list[tuple[int, float | None]]]:
    with vault.meta.read() as conn:
        return metric_envelope(conn, run_id, buckets=CHART_BUCKETS)


def test_the_migration_makes_the_table_on_both_databases(any_vault: Vault) -> None:
    columns = {c["name"] for c in sa.inspect(any_vault.meta.engine).get_columns("run_envelopes")}
    assert columns == {"run_id", "key", "buckets", "points"}
    assert any_vault.meta.schema_is_current()


def test_a_run_finished_before_the_migration_gets_its_envelope_on_first_view(
    any_vault: Vault, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_metadata(any_vault, project)  # then migrated by the older labvault
    with monkeypatch.context() as patch:
        ship_migrations_before(9, tmp_path, patch)  # 0009_run_envelopes
        with Vault.open(project) as old:
            run_id = _run(old, project)
            old.runs.finish(run_id)  # no table to store into: the end still succeeds
            assert old.runs.get(run_id).status == "finished"
    with Vault.open(project) as new:
        assert new.meta.schema_is_current()
        assert _stored(new, run_id) == {}
        assert new.runs.history_envelope(run_id, buckets=CHART_BUCKETS) == _live(new, run_id)
        assert set(_stored(new, run_id)) == {"loss"}


def test_ending_a_run_through_the_server_stores_its_long_histories_envelope(
    any_vault: Vault, project: Path, app: Any
) -> None:
    run_id = _run(any_vault, project)
    assert _stored(any_vault, run_id) == {}  # a running run is read live
    ended = app.post(f"/api/v1/runs/{run_id}/end", json={"status": "finished", "exit_code": 0})
    assert ended.status_code == 200, ended.text
    stored = _stored(any_vault, run_id)
    assert set(stored) == {"loss"}  # the short history is its own envelope: nothing stored
    live = _live(any_vault, run_id)
    assert [tuple(p) for p in json.loads(stored["loss"])] == live["loss"]
    assert len(live["loss"]) <= 2 * CHART_BUCKETS
    assert any_vault.runs.history_envelope(run_id, buckets=CHART_BUCKETS) == live


def test_the_run_page_of_a_finished_run_draws_the_stored_envelope(any_vault: Vault, project: Path, app: Any) -> None:
    run_id = _run(any_vault, project)
    any_vault.runs.finish(run_id)
    with any_vault.meta.transaction() as conn:
        conn.execute(sa.update(run_envelopes).values(points=json.dumps([[0, MARK], [LONG - 1, MARK]])))
    page = app.get(f"/runs/{run_id}")
    assert page.status_code == 200, page.text
    assert str(MARK) in page.text  # the stored row, not a query over the history


def test_a_missing_or_unreadable_envelope_is_computed_and_stored_again(any_vault: Vault, project: Path) -> None:
    run_id = _run(any_vault, project)
    any_vault.runs.finish(run_id)
    expected = _live(any_vault, run_id)
    for broken in (None, '[[0, "NaN"]]', "not json"):
        with any_vault.meta.transaction() as conn:
            if broken is None:  # a run ended before envelopes were stored, or a crash after its end
                conn.execute(sa.delete(run_envelopes))
            else:
                conn.execute(sa.update(run_envelopes).values(points=broken))
        assert any_vault.runs.history_envelope(run_id, buckets=CHART_BUCKETS) == expected
        if broken is None:
            assert set(_stored(any_vault, run_id)) == {"loss"}


def test_only_a_finished_run_keeps_an_envelope_and_its_delete_removes_it(any_vault: Vault, project: Path) -> None:
    failed = _run(any_vault, project)
    any_vault.runs.finish(failed, status="failed", exit_code=1)  # can be resumed: read live
    any_vault.runs.history_envelope(failed, buckets=CHART_BUCKETS)
    assert _stored(any_vault, failed) == {}
    run_id = _run(any_vault, project)
    any_vault.runs.finish(run_id)
    assert set(_stored(any_vault, run_id)) == {"loss"}
    any_vault.runs.delete(run_id)
    assert _stored(any_vault, run_id) == {}
    any_vault.runs.history_envelope(run_id, buckets=CHART_BUCKETS)  # a deleted run's page stores nothing
    assert _stored(any_vault, run_id) == {}
