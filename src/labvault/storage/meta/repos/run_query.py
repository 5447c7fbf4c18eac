"""Selecting runs by filter and sort (``vault.runs.list``): the statement comes from
:mod:`labvault.storage.meta.run_filter`, the compiler the lean read path shares, and runs on the
driver under the caller's transaction."""

from __future__ import annotations

import sqlite3
from typing import Any, cast

from sqlalchemy.engine import Connection

from labvault.storage.meta.lean_records import translate_error
from labvault.storage.meta.run_filter import Node, SortKey, run_ids_query

__all__ = ["select_run_ids"]


def select_run_ids(
    conn: Connection,
    *,
    deleted: bool,
    project: str | None,
    where: Node | None,
    sort: SortKey | None,
    limit: int | None,
    sqlite: bool,
) -> list[str]:
    """The ids of the runs matching ``where``, newest first unless ``sort`` says otherwise."""
    sql, params = run_ids_query(deleted=deleted, project=project, where=where, sort=sort, limit=limit, sqlite=sqlite)
    if sqlite:
        # The driver's own cursor, as repos.runs.load_runs: SQLAlchemy's result layer costs more than the query.
        cur = cast(Any, conn.connection.driver_connection).cursor()
        cur.row_factory = None
        try:
            return [row[0] for row in cur.execute(sql, params)]
        except sqlite3.Error as err:
            raise translate_error(err) from err
    return [row[0] for row in conn.exec_driver_sql(sql, tuple(params))]
