"""Selecting runs by filter and sort (``vault.runs.list``): the statement comes from
:mod:`labvault.storage.meta.run_filter`, the compiler the lean read path shares, and runs on the
driver's connection of the caller's transaction (``MetaStore.read_driver``)."""

from __future__ import annotations

from typing import Any

from labvault.entities import Run
from labvault.storage.meta import lean_records
from labvault.storage.meta.run_filter import Node, SortKey

__all__ = ["select_runs"]


def select_runs(
    driver: Any,
    *,
    sqlite: bool,
    deleted: bool,
    project: str | None,
    where: Node | None,
    sort: SortKey | None,
    limit: int | None,
    offset: int = 0,
) -> list[Run]:
    """Full records of the runs matching ``where``, newest first unless ``sort`` says otherwise, on
    ``driver`` (a ``sqlite3`` or psycopg connection) under the caller's transaction: SQLAlchemy's
    result layer costs more than the queries."""
    return lean_records.select_runs(
        driver, deleted=deleted, project=project, where=where, sort=sort, limit=limit, sqlite=sqlite, offset=offset
    )
