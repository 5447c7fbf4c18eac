"""Core statements compiled once per dialect and run on the driver's cursor, inside the caller's transaction.

For the few statements on hot write paths (a registration, an alias move, an audit append): an
``execute`` through SQLAlchemy costs about 30 us, ten times what SQLite takes to run a one-row
statement. The statement is still written once, with Core, for both dialects; it is compiled on first
use per dialect, and each call only applies the bind processors of its parameters (datetimes on
SQLite) and runs the SQL on the DB-API connection under the caller's SQLAlchemy connection, so it
takes part in the caller's transaction. DB-API errors are raised as SQLAlchemy's, which
:class:`~labvault.storage.meta.store.MetaStore` translates as usual.

``first``, ``all`` return rows as the driver gives them, without result processing (a datetime column
comes back as SQLite's text); ``mapping`` converts the values as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

__all__ = ["Prepared"]

_Getter = tuple[
    str | None, Any, Callable[[Any], Any] | None
]  # (parameter key | None for a constant, constant, processor)


class _Compiled:
    __slots__ = ("columns", "getters", "names", "positional", "results", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"{type(statement).__name__} does not compile to a SQL statement")
        self.sql = compiled.string
        if "POSTCOMPILE" in self.sql:
            raise ValueError("a statement with expanding parameters cannot be prepared")
        self.positional = compiled.positional
        self.names: list[str] = (
            list(compiled.positiontup or []) if self.positional else list(dict.fromkeys(compiled.bind_names.values()))
        )
        self.getters: list[_Getter] = []
        for name in self.names:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                self.getters.append((bind.key, None, processor))
            else:  # a value written into the statement (a literal in a WHERE, a LIMIT)
                value = bind.effective_value
                self.getters.append((None, processor(value) if processor else value, None))

        # The columns of a SELECT, with their types' result processors (datetimes from SQLite's text).
        selected = getattr(statement, "selected_columns", None)
        self.columns: list[str] = [] if selected is None else [c.key for c in selected]
        self.results: list[Callable[[Any], Any] | None] = (
            [] if selected is None else [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in selected]
        )

    def parameters(self, params: Mapping[str, Any]) -> Any:
        values = []
        for key, constant, processor in self.getters:
            if key is None:
                values.append(constant)
            else:
                value = params[key]
                values.append(processor(value) if processor is not None and value is not None else value)
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


class Prepared:
    """One Core statement; ``keys`` names the columns an INSERT or UPDATE without ``values()`` sets."""

    __slots__ = ("_by_dialect", "_keys", "_statement")

    def __init__(self, statement: ClauseElement, *, keys: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._keys = tuple(keys) if keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = _Compiled(self._statement, dialect, self._keys)
        return found

    @contextmanager
    def _cursor(self, conn: Connection, sql: str, params: Any) -> Iterator[Any]:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            yield cursor
        except conn.dialect.loaded_dbapi.Error as err:
            raise exc.DBAPIError.instance(sql, params, err, conn.dialect.loaded_dbapi.Error) from err
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """Run it and return its first row (None when there is none)."""
        compiled = self._compiled(conn.dialect)
        values = compiled.parameters(params or {})
        with self._cursor(conn, compiled.sql, values) as cursor:
            cursor.execute(compiled.sql, values)
            row = cursor.fetchone()
        return None if row is None else tuple(row)

    def mapping(self, conn: Connection, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Run a SELECT and return its first row as ``{column key: value}``, values converted as
        SQLAlchemy would (datetimes included); None when there is no row."""
        row = self.first(conn, params)
        if row is None:
            return None
        compiled = self._compiled(conn.dialect)
        return {
            key: value if convert is None or value is None else convert(value)
            for key, value, convert in zip(compiled.columns, row, compiled.results, strict=True)
        }

    def all(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run it and return every row."""
        compiled = self._compiled(conn.dialect)
        values = compiled.parameters(params or {})
        with self._cursor(conn, compiled.sql, values) as cursor:
            cursor.execute(compiled.sql, values)
            return [tuple(r) for r in cursor.fetchall()]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Run it; returns the number of rows it changed."""
        compiled = self._compiled(conn.dialect)
        values = compiled.parameters(params or {})
        with self._cursor(conn, compiled.sql, values) as cursor:
            cursor.execute(compiled.sql, values)
            return int(cursor.rowcount)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per parameter set (one ``executemany``)."""
        if not rows:
            return
        compiled = self._compiled(conn.dialect)
        values = [compiled.parameters(r) for r in rows]
        with self._cursor(conn, compiled.sql, values) as cursor:
            cursor.executemany(compiled.sql, values)
