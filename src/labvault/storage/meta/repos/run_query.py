"""The run filter's syntax tree, compiled to parameterised SQLAlchemy expressions.

Every user value is a bound parameter (keys too), so a filter can never change the SQL's shape.
A comparison on a metric, param or tag compiles to ``runs.id IN (SELECT run_id FROM <table> WHERE
key = :k AND <value comparison>)``, answered from the table's ``(key, value)`` index. That is
two-valued by construction: a missing key, a NaN or an infinity (stored as NULL) is simply not in
the set, so the comparison is false and ``not`` selects exactly the runs it did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from labvault.errors import ValidationError
from labvault.storage.meta.tables import run_latest, run_params, run_tags, runs

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
    "compile_filter",
    "compile_sort",
    "select_run_ids",
]

#: Run attributes a filter or sort may name, and their columns.
ATTRIBUTES: dict[str, Any] = {
    "id": runs.c.id,
    "name": runs.c.name,
    "project": runs.c.project,
    "status": runs.c.status,
    "user": runs.c.user,
    "started": runs.c.started_at,
    "ended": runs.c.ended_at,
    "inputs": runs.c.inputs,  # a list: see _inputs_match
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


def latest_metric(key: str) -> Any:
    """The latest finite value of metric ``key`` of the outer run (NULL if missing or not finite)."""
    return _value_for_key(run_latest, "value", key)


def _value_for_key(table: sa.Table, column: str, key: str) -> Any:
    """The outer run's ``column`` in ``table`` for ``key``, as a scalar subquery (NULL when it has none)."""
    return sa.select(table.c[column]).where(table.c.run_id == runs.c.id, table.c.key == key).scalar_subquery()


def _like(column: Any, pattern: str, *, sqlite: bool) -> ColumnElement[bool]:
    if not sqlite:
        return column.like(pattern, escape="\\")  # type: ignore[no-any-return]
    # SQLite's LIKE ignores ASCII case; GLOB is case-sensitive, so translate % and _ to * and ?.
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
    return column.op("GLOB")(sa.bindparam(None, "".join(out), type_=sa.String))  # type: ignore[no-any-return]


def _compare_column(column: Any, op: Op, value: Value, *, sqlite: bool) -> ColumnElement[bool]:
    if op == "like":
        return _like(column, str(value), sqlite=sqlite)
    bound = sa.bindparam(None, value, type_=column.type if isinstance(value, datetime) else None)
    if op == "=":
        return column == bound  # type: ignore[no-any-return]
    if op == "!=":
        return column != bound  # type: ignore[no-any-return]
    if op == "<":
        return column < bound  # type: ignore[no-any-return]
    if op == "<=":
        return column <= bound  # type: ignore[no-any-return]
    if op == ">":
        return column > bound  # type: ignore[no-any-return]
    return column >= bound  # type: ignore[no-any-return]


def _value_column(field: Field, value: Value) -> tuple[sa.Table, Any]:
    if field.scope == "metrics":
        return run_latest, run_latest.c.value
    table = run_params if field.scope == "params" else run_tags
    return table, table.c.num if isinstance(value, float) else table.c.text


def _inputs_match(node: Compare, *, sqlite: bool) -> ColumnElement[bool]:
    """``inputs`` is a list: ``=``, ``in`` and ``like`` hold when any input matches, ``!=`` when none does."""
    if node.op not in ("=", "!=", "in", "like") or not all(isinstance(v, str) for v in node.values):
        raise ValidationError(
            "inputs compare as text with =, !=, in or like",
            hint="e.g. inputs = 'data:transactions@v1' or inputs like 'data:transactions@%'",
        )
    if sqlite:
        element = sa.func.json_each(runs.c.inputs).table_valued("value")
    else:
        element = (
            sa.func.jsonb_array_elements_text(sa.cast(runs.c.inputs, JSONB)).table_valued("value").render_derived()
        )
    op: Op = "=" if node.op == "!=" else node.op
    conds = [_compare_column(element.c.value, "=" if op == "in" else op, v, sqlite=sqlite) for v in node.values]
    found = sa.exists(sa.select(sa.literal(1)).select_from(element).where(sa.or_(*conds)))
    return sa.not_(found) if node.op == "!=" else found


def _compare(node: Compare, *, sqlite: bool) -> ColumnElement[bool]:
    field = node.field
    if field.scope == "attribute" and field.key == "inputs":
        return _inputs_match(node, sqlite=sqlite)
    if field.scope == "attribute":
        column = ATTRIBUTES[field.key]
        if node.op == "in":
            cond = sa.or_(*(_compare_column(column, "=", v, sqlite=sqlite) for v in node.values))
        else:
            cond = _compare_column(column, node.op, node.values[0], sqlite=sqlite)
        # Attributes such as `ended` can be NULL: make the comparison two-valued.
        return sa.func.coalesce(cond, sa.false())  # type: ignore[no-any-return]
    values = node.values
    table, _ = _value_column(field, values[0])
    if node.op == "in":
        conds = [_compare_column(_value_column(field, v)[1], "=", v, sqlite=sqlite) for v in values]
        cond = sa.or_(*conds)
    else:
        cond = _compare_column(_value_column(field, values[0])[1], node.op, values[0], sqlite=sqlite)
    matching = sa.select(table.c.run_id).where(table.c.key == sa.bindparam(None, field.key), cond)
    return runs.c.id.in_(matching)


def compile_filter(node: Node, *, sqlite: bool) -> ColumnElement[bool]:
    if isinstance(node, Compare):
        return _compare(node, sqlite=sqlite)
    if isinstance(node, Not):
        return sa.not_(compile_filter(node.node, sqlite=sqlite))
    parts = [compile_filter(n, sqlite=sqlite) for n in node.nodes]
    return sa.and_(*parts) if isinstance(node, And) else sa.or_(*parts)


def compile_sort(key: SortKey) -> list[Any]:
    f = key.field
    if f.scope == "attribute" and f.key == "inputs":
        raise ValidationError("runs cannot be sorted by their inputs", hint="sort by name, started, metrics.KEY...")
    if f.scope == "attribute":
        column = ATTRIBUTES[f.key]
    elif f.scope == "metrics":
        column = latest_metric(f.key)
    elif f.scope in ("params", "tags"):
        table = run_params if f.scope == "params" else run_tags
        # Numbers sort as numbers and before text; runs without the key sort last either way.
        num, text = _value_for_key(table, "num", f.key), _value_for_key(table, "text", f.key)
        missing = sa.case((text.is_(None), 1), else_=0)
        if key.descending:
            return [missing, num.desc(), text.desc(), runs.c.id]
        return [missing, num.is_(None), num, text, runs.c.id]
    else:  # pragma: no cover - the parser only builds the scopes above
        raise ValidationError(f"cannot sort by {f.key!r}")
    missing = sa.case((column.is_(None), 1), else_=0)
    return [missing, column.desc() if key.descending else column.asc(), runs.c.id]


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
    query = sa.select(runs.c.id)
    query = query.where(runs.c.deleted_at.is_not(None) if deleted else runs.c.deleted_at.is_(None))
    if project:
        query = query.where(runs.c.project == project)
    if where is not None:
        query = query.where(compile_filter(where, sqlite=sqlite))
    order = compile_sort(sort) if sort else [runs.c.started_at.desc(), runs.c.id]
    query = query.order_by(*order)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).scalars())
