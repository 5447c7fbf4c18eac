"""The run queries of :class:`~labvault.storage.meta.lean.LeanReader` (``runs list`` and ``runs show``),
each the twin of the repo function its docstring names."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from labvault.entities import MetricPoint, Run
from labvault.storage.meta.lean_records import select_runs
from labvault.storage.meta.run_filter import Node, SortKey

__all__ = ["RunReads"]

_NON_FINITE = {1: float("nan"), 2: float("inf"), 3: float("-inf")}
_PREFIX_MATCHES = 11  # as repos.runs.match_prefix: enough to say "ambiguous" and list some


class RunReads:
    _conn: Any  # a sqlite3 or psycopg connection

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        raise NotImplementedError

    sqlite = True  # which SQL dialect runs_query writes

    def select_runs(
        self,
        *,
        project: str | None,
        limit: int | None,
        deleted: bool,
        where: Node | None = None,
        sort: SortKey | None = None,
    ) -> list[Run]:
        """``run_query.select_runs``: the same statements, from the same compiler."""
        return select_runs(
            self._conn, deleted=deleted, project=project, where=where, sort=sort, limit=limit, sqlite=self.sqlite
        )

    def match_runs(self, run_id: str) -> list[str]:
        """``RunRecords.resolve`` without its errors: the id itself when it is a whole stored id,
        else the ids it is a prefix of (``repos.runs.match_prefix``)."""
        if len(run_id) == 12 and self._rows("SELECT id FROM runs WHERE id = ?", (run_id,)):
            return [run_id]
        # Ids are lowercase hex (parse_run_id checked it): the prefix holds no LIKE wildcard.
        rows = self._rows("SELECT id FROM runs WHERE id LIKE ? ORDER BY id LIMIT ?", (run_id + "%", _PREFIX_MATCHES))
        return [r[0] for r in rows]

    def metric_history(self, run_id: str) -> dict[str, list[MetricPoint]]:
        """``repos.runs.metric_history``: every key's points by step."""
        out: dict[str, list[MetricPoint]] = defaultdict(list)
        for key, step, ts_ms, value, kind in self._rows(
            "SELECT key, step, ts_ms, value, kind FROM run_metrics WHERE run_id = ? ORDER BY key, step, id", (run_id,)
        ):
            number = float(value) if kind == 0 and value is not None else _NON_FINITE.get(kind, float("nan"))
            out[key].append(MetricPoint(key, int(step), datetime.fromtimestamp(ts_ms / 1000, UTC), number))
        return dict(out)

    def tagged_run_ids(self, key: str, text: str) -> list[str]:
        """``select_runs`` for ``tags.KEY = 'TEXT'`` sorted by ``started``: oldest first, not deleted."""
        rows = self._rows(
            "SELECT id FROM runs WHERE deleted_at IS NULL AND id IN"
            " (SELECT run_id FROM run_tags WHERE key = ? AND text = ?) ORDER BY started_at, id",
            (key, text),
        )
        return [r[0] for r in rows]
