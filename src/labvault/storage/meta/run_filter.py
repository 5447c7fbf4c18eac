"""The run filter's syntax tree, compiled to parameterised SQL text for SQLite and PostgreSQL.

One compiler serves both read paths: :func:`repos.run_query.select_runs` runs its statement on
the driver under SQLAlchemy's connection, and the lean reader (``storage/meta/lean.py``) on the
standard ``sqlite3`` module or psycopg, without importing SQLAlchemy. Building the statement as
text costs a tenth of building it as SQLAlchemy expressions, and the two paths cannot drift apart.

Every user value is a bound parameter (keys too), so a filter can never change the SQL's shape.
A comparison on a metric, param or tag compiles to ``runs.id IN (SELECT run_id FROM <table> WHERE
key = ? AND <value comparison>)``, answered from the table's ``(key, value)`` index. That is
two-valued by construction: a missing key, a NaN or an infinity (stored as NULL) is simply not in
the set, so the comparison is false and ``not`` selects exactly the runs it did not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from labvault.errors import ValidationError

__all__ = [
    "ATTRIBUTES",
    "And",
    "Compare",
    "Field",
    "Node",
    "Not",
    "Op",
    "Or",
    "Scope",
    "SortKey",
    "Value",
    "metric_page_queries",
    "runs_query",
]

#: Run attributes a filter or sort may name, and their columns (``user`` is a keyword in PostgreSQL).
ATTRIBUTES: dict[str, str] = {
    "id": "runs.id",
    "name": "runs.name",
    "project": "runs.project",
    "status": "runs.status",
    "user": 'runs."user"',
    "started": "runs.started_at",
    "ended": "runs.ended_at",
    "inputs": "runs.inputs",  # a list: see _Compiler.inputs_match
    "parent": "runs.parent_id",
}

Scope = Literal["metrics", "params", "tags", "attribute"]
Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", "like"]
Value = str | float | datetime


@dataclass(frozen=True, slots=True)
class Field:
    scope: Scope
    key: str


@dataclass(frozen=True, slots=True)
class Compare:
    field: Field
    op: Op
    values: tuple[Value, ...]  # one value, or the list of ``in``


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node = Compare | Not | And | Or


@dataclass(frozen=True, slots=True)
class SortKey:
    field: Field
    descending: bool


_TABLES = {"metrics": "run_latest", "params": "run_params", "tags": "run_tags"}
# SQLAlchemy's storage format for DateTime on SQLite: naive UTC text, always with microseconds.
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _glob(pattern: str) -> str:
    """A LIKE pattern (``\\`` escapes) as a GLOB pattern: SQLite's LIKE ignores ASCII case, GLOB does not."""
    out: list[str] = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(f"[{ch}]" if ch in "*?[" else ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?[":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    if escaped:
        out.append("\\")
    return "".join(out)


class _Compiler:
    """Appends SQL text and its parameters in placeholder order."""

    def __init__(self, *, sqlite: bool) -> None:
        self.sqlite = sqlite
        self.mark = "?" if sqlite else "%s"
        self.params: list[object] = []

    def bind(self, value: object) -> str:
        if isinstance(value, datetime) and self.sqlite:
            value = value.strftime(_SQLITE_TIME)
        self.params.append(value)
        return self.mark

    def compare_column(self, column: str, op: Op, value: Value) -> str:
        if op == "like":
            if self.sqlite:
                return f"{column} GLOB {self.bind(_glob(str(value)))}"
            return f"{column} LIKE {self.bind(value)} ESCAPE '\\'"
        return f"{column} {op} {self.bind(value)}"

    def inputs_match(self, node: Compare) -> str:
        """``inputs`` is a list: ``=``, ``in`` and ``like`` hold when any input matches, ``!=`` when none does."""
        if node.op not in ("=", "!=", "in", "like") or not all(isinstance(v, str) for v in node.values):
            raise ValidationError(
                "inputs compare as text with =, !=, in or like",
                hint="e.g. inputs = 'data:transactions@v1' or inputs like 'data:transactions@%'",
            )
        source = (
            "json_each(runs.inputs) AS e"
            if self.sqlite
            else "jsonb_array_elements_text(CAST(runs.inputs AS JSONB)) AS e(value)"
        )
        op: Op = "=" if node.op in ("!=", "in") else node.op
        conds = " OR ".join(self.compare_column("e.value", op, v) for v in node.values)
        found = f"EXISTS (SELECT 1 FROM {source} WHERE {conds})"
        return f"NOT {found}" if node.op == "!=" else found

    def compare(self, node: Compare) -> str:
        field = node.field
        if field.scope == "attribute" and field.key == "inputs":
            return self.inputs_match(node)
        if field.scope == "attribute":
            column = ATTRIBUTES[field.key]
            if node.op == "in":
                cond = " OR ".join(self.compare_column(column, "=", v) for v in node.values)
            else:
                cond = self.compare_column(column, node.op, node.values[0])
            # Attributes such as `ended` can be NULL: make the comparison two-valued.
            return f"COALESCE(({cond}), {'0' if self.sqlite else 'false'})"
        table = _TABLES[field.scope]
        key = self.bind(field.key)

        def value_column(value: Value) -> str:
            if field.scope == "metrics":
                return "value"
            return "num" if isinstance(value, float) else "text"

        if node.op == "in":
            cond = " OR ".join(self.compare_column(value_column(v), "=", v) for v in node.values)
        else:
            cond = self.compare_column(value_column(node.values[0]), node.op, node.values[0])
        return f"runs.id IN (SELECT run_id FROM {table} WHERE key = {key} AND ({cond}))"

    def filter(self, node: Node) -> str:
        # As few parentheses as the precedence needs (SQLite's parser stack is shallow): an OR
        # inside an AND, and what NOT applies to. Every comparison is two-valued, so NOT NOT x is x.
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Not):
            inner = node.node
            if isinstance(inner, Not):
                return self.filter(inner.node)
            return f"NOT ({self.filter(inner)})"
        if isinstance(node, Or):
            return " OR ".join(self.filter(n) for n in node.nodes)
        return " AND ".join(f"({self.filter(n)})" if isinstance(n, Or) else self.filter(n) for n in node.nodes)

    def sort(self, key: SortKey) -> tuple[str, str]:
        """``(join, order)``: the ``LEFT JOIN`` that brings the sort key's value beside each run (one
        lookup per run by the table's primary key, where a scalar subquery per ORDER BY term made up
        to four) and the ORDER BY terms."""
        f = key.field
        direction = "DESC" if key.descending else "ASC"
        if f.scope == "attribute" and f.key == "inputs":
            raise ValidationError("runs cannot be sorted by their inputs", hint="sort by name, started, metrics.KEY...")
        if f.scope == "attribute":
            column = ATTRIBUTES[f.key]
            return "", f"CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}, runs.id"
        table = _TABLES[f.scope]
        join = f" LEFT JOIN {table} AS sort_by ON sort_by.run_id = runs.id AND sort_by.key = {self.bind(f.key)}"
        if f.scope == "metrics":
            return join, f"CASE WHEN sort_by.value IS NULL THEN 1 ELSE 0 END, sort_by.value {direction}, runs.id"
        # Numbers sort as numbers and before text; runs without the key sort last either way.
        missing = "CASE WHEN sort_by.text IS NULL THEN 1 ELSE 0 END"
        if key.descending:
            return join, f"{missing}, sort_by.num DESC, sort_by.text DESC, runs.id"
        return join, f"{missing}, sort_by.num IS NULL, sort_by.num, sort_by.text, runs.id"


def runs_query(
    *,
    deleted: bool,
    project: str | None,
    where: Node | None,
    sort: SortKey | None,
    limit: int | None,
    sqlite: bool,
    columns: str = "runs.id",
    offset: int = 0,
) -> tuple[str, tuple[object, ...]]:
    """``(sql, params)`` selecting ``columns`` (the id first) of the runs matching ``where``, newest
    first unless ``sort`` says otherwise; placeholders are ``?`` for SQLite and ``%s`` for PostgreSQL.

    The statements are kept (the last 256, keyed on every argument: a syntax tree is a value, so
    two filters differing in one value are two keys), as a table refreshing its page asks again."""
    return _runs_query(deleted, project, where, sort, limit, sqlite, columns, offset)


@functools.lru_cache(maxsize=256)
def _runs_query(
    deleted: bool,
    project: str | None,
    where: Node | None,
    sort: SortKey | None,
    limit: int | None,
    sqlite: bool,
    columns: str,
    offset: int,
) -> tuple[str, tuple[object, ...]]:
    c = _Compiler(sqlite=sqlite)
    # The join comes first in the text, so its key is bound first.
    join, order = c.sort(sort) if sort else ("", "runs.started_at DESC, runs.id")
    sql = f"SELECT {columns} FROM runs{join} WHERE runs.deleted_at IS " + ("NOT NULL" if deleted else "NULL")
    if project:
        sql += f" AND runs.project = {c.bind(project)}"
    if where is not None:
        sql += f" AND ({c.filter(where)})"
    sql += " ORDER BY " + order
    if limit is not None:
        sql += f" LIMIT {c.bind(limit)}"
    if offset:  # a page of the web UI's runs table; SQLite needs a LIMIT before an OFFSET
        sql += ("" if limit is not None else " LIMIT -1" if sqlite else " LIMIT ALL") + f" OFFSET {c.bind(offset)}"
    return sql, tuple(c.params)


def _conditions(c: _Compiler, *, deleted: bool, project: str | None, where: Node | None) -> str:
    sql = "runs.deleted_at IS " + ("NOT NULL" if deleted else "NULL")
    if project:
        sql += f" AND runs.project = {c.bind(project)}"
    if where is not None:
        sql += f" AND ({c.filter(where)})"
    return sql


def metric_page_queries(
    *, deleted: bool, project: str | None, where: Node | None, sort: SortKey, sqlite: bool
) -> dict[str, tuple[str, list[object]]]:
    """A page of runs sorted by a metric in up to three statements, each answered from an index: the
    runs with a finite latest value in the ``(key, value)`` index's order (``valued``: limit and offset
    are its last two parameters), how many there are (``count``), and the others by id (``rest``,
    likewise). The same order as :func:`runs_query`'s, where every run's value was looked up and the
    whole set sorted before the first page could be returned."""
    out: dict[str, tuple[str, list[object]]] = {}
    direction = "DESC" if sort.descending else "ASC"
    for part in ("valued", "count", "rest"):
        c = _Compiler(sqlite=sqlite)
        if part == "rest":
            conds = _conditions(c, deleted=deleted, project=project, where=where)
            sql = (
                f"SELECT runs.id FROM runs WHERE {conds} AND NOT EXISTS (SELECT 1 FROM run_latest AS sort_by"
                f" WHERE sort_by.run_id = runs.id AND sort_by.key = {c.bind(sort.field.key)}"
                " AND sort_by.value IS NOT NULL) ORDER BY runs.id"
            )
        else:
            key = c.bind(sort.field.key)
            conds = _conditions(c, deleted=deleted, project=project, where=where)
            what = "count(*)" if part == "count" else "runs.id"
            sql = (
                f"SELECT {what} FROM run_latest AS sort_by JOIN runs ON runs.id = sort_by.run_id"
                f" WHERE sort_by.key = {key} AND sort_by.value IS NOT NULL AND {conds}"
            )
            if part == "valued":
                sql += f" ORDER BY sort_by.value {direction}, runs.id"
        if part != "count":
            sql += " LIMIT " + c.mark + " OFFSET " + c.mark
        out[part] = (sql, c.params)
    return out
