"""Closing a vault releases every database connection it opened, the metric appender's included."""

from __future__ import annotations

from pathlib import Path

from labvault import Vault


def test_close_releases_the_metric_connection(any_vault: Vault, project: Path) -> None:
    # On PostgreSQL a pooled connection still checked out when the engine is disposed stays open
    # until garbage collection, which warns (and fails a run with warnings as errors).
    run = any_vault.runs.create(name="t", capture=False, background_git=False)
    any_vault.runs.log_metrics(run.id, [("loss", 0.5, 0)])
    any_vault.runs.finish(run.id)
    appender = any_vault.runs._local.appender
    conn = appender._conn.driver_connection
    any_vault.close()
    assert appender._conn is None
    assert _closed(conn)


def _closed(conn: object) -> bool:
    try:
        conn.execute("select 1")  # type: ignore[attr-defined]
    except Exception:
        return True
    return False
