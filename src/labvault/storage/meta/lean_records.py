"""Run records from a ``sqlite3`` or psycopg connection: the one loader of full runs that the services
(``repos.runs.load_runs``) and the lean read commands share, and the row decoders the lean reader uses."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from datetime import UTC, datetime
from typing import Any, cast

from labvault.entities import Artifact, Run
from labvault.errors import LabvaultError, LockedError, StorageError
from labvault.refs import Digest
from labvault.storage.meta.builders import record_builder
from labvault.storage.meta.lean_pg import pg_errors, translate_pg_error
from labvault.storage.meta.run_filter import Node, SortKey, metric_page_queries, runs_query

__all__ = ["RUN_COLUMNS", "LazyJSON", "load_runs", "parse_time", "select_runs", "translate_error"]

_CHUNK = 500  # ids per IN (...): well under SQLite's 32,766 bound parameters
_NON_FINITE = {1: float("nan"), 2: float("inf"), 3: float("-inf")}
_INDEX_WALK = 20_000  # runs a page sorted by a metric may skip along the (key, value) index
# The run row's columns, in the order RUN_COLUMNS selects them.
_ROW = (
    "id",
    "project",
    "name",
    "status",
    "started_at",
    "ended_at",
    "parent_id",
    "user",
    "host",
    "exit_code",
    "error",
    "seed",
    "inputs",
    "capture",
    "deleted_at",
)
# The row's columns, then the values the other tables add.
_RUN_ORDER = (*_ROW, "params", "metrics", "tags", "outputs", "artifacts")
_build_run = record_builder(Run, _RUN_ORDER)


def parse_time(value: str | datetime | None) -> datetime | None:
    """SQLAlchemy stores SQLite datetimes as naive UTC text: ``2026-11-30 00:00:17.649620``;
    PostgreSQL gives them as aware datetimes."""
    if isinstance(value, str):
        # Parsing the offset is 8x faster than .replace(tzinfo=UTC), and gives the same UTC singleton.
        return datetime.fromisoformat(value + "+00:00")
    return None if value is None else value.astimezone(UTC)


_scan: Callable[[str, int], tuple[Any, int]] = cast(Any, json.JSONDecoder()).scan_once  # json.loads's C scanner


def _loads(text: str) -> Any:
    """``json.loads`` for the documents labvault writes (nothing around the value): the C scanner
    alone, without the Python layers and the two whitespace searches ``json.loads`` adds to each
    call (two documents per run). Any other text goes through ``json.loads`` itself."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _metric(value: float | None, kind: int) -> float:
    return float(value) if kind == 0 and value is not None else _NON_FINITE.get(kind, float("nan"))


def _param(raw: str) -> object:
    if raw.startswith('"') and "\\" not in raw:
        return raw[1:-1]
    if raw.isdigit():
        return int(raw)
    return json.loads(raw)


def translate_error(err: Exception) -> LabvaultError:
    """The errors ``store._translate`` makes of the same SQLite (or PostgreSQL) failures, with the same words."""
    if not isinstance(err, sqlite3.Error):
        return translate_pg_error(err)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    low = text.lower()
    if "locked" in low or "busy" in low:
        return LockedError(f"the metadata database is busy ({text})")
    return StorageError(f"metadata database error ({text})", hint="run `labvault fsck`; report it if it persists")


class LazyJSON(Mapping[str, Any]):
    """A JSON object decoded on first use: listings rarely look at a run's capture document."""

    __slots__ = ("_doc", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._doc: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = _loads(self._text)
        return self._doc

    def __getitem__(self, key: str) -> Any:
        doc = self._doc
        return (doc if doc is not None else self._get())[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    # The decoded dict's own views: dict(capture) and capture.items() then run at C speed.
    def keys(self) -> KeysView[str]:
        return self._get().keys()

    def items(self) -> ItemsView[str, Any]:
        return self._get().items()

    def values(self) -> ValuesView[Any]:
        return self._get().values()

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


# "user" is a keyword (CURRENT_USER) in PostgreSQL
RUN_COLUMNS = ", ".join(f'runs."{c}"' if c == "user" else f"runs.{c}" for c in _ROW)


# Each run's params and tags as one JSON object text, from a lookup per run in the run row's own
# statement: a run's ten params then cross into Python as one string decoded by one json.loads, where
# they were ten rows (a search returning 56 runs spent more time making those rows than finding them).
# The stored values are JSON already; keys and tag texts are quoted by the database.
_DOCS = {
    True: (
        "(SELECT '{' || group_concat(json_quote(key) || ':' || value, ',') || '}'"
        " FROM run_params WHERE run_id = runs.id)",
        "(SELECT '{' || group_concat(json_quote(key) || ':' || json_quote(text), ',') || '}'"
        " FROM run_tags WHERE run_id = runs.id)",
    ),
    False: (
        "(SELECT '{' || string_agg(to_json(key)::text || ':' || value, ',' ORDER BY key) || '}'"
        " FROM run_params WHERE run_id = runs.id)",
        "(SELECT '{' || string_agg(to_json(key)::text || ':' || to_json(text)::text, ',' ORDER BY key) || '}'"
        " FROM run_tags WHERE run_id = runs.id)",
    ),
}


def _full_columns(sqlite: bool) -> str:
    """RUN_COLUMNS, then the run's params and tags documents."""
    return ", ".join((RUN_COLUMNS, *_DOCS[sqlite]))


def select_runs(
    conn: Any,
    *,
    deleted: bool,
    project: str | None,
    where: Node | None,
    sort: SortKey | None,
    limit: int | None,
    sqlite: bool = True,
    offset: int = 0,
) -> list[Run]:
    """Full records of the runs matching ``where``, newest first unless ``sort`` says otherwise: the
    filter's statement selects the run rows themselves, and :func:`load_runs` adds their values."""
    # The index walks its entries up to the offset: past about 20,000 runs sorting them all is cheaper.
    if sort is not None and sort.field.scope == "metrics" and limit is not None and offset < _INDEX_WALK:
        ids = _metric_page(
            conn, deleted=deleted, project=project, where=where, sort=sort, limit=limit, offset=offset, sqlite=sqlite
        )
        return load_runs(conn, ids, sqlite=sqlite)
    # A page sorts the ids alone, then reads the page's rows: the sorter then holds no capture
    # documents (a page deep into 100,000 runs sorted 4x faster), and the params and tags of the
    # runs left off the page are never gathered.
    narrow = limit is not None
    sql, params = runs_query(
        deleted=deleted,
        project=project,
        where=where,
        sort=sort,
        limit=limit,
        sqlite=sqlite,
        columns="runs.id" if narrow else _full_columns(sqlite),
        offset=offset,
    )
    cur = conn.cursor()
    if sqlite:
        cur.row_factory = None
    errors: tuple[type[Exception], ...] = (sqlite3.Error, *pg_errors())
    try:
        rows = {row[0]: tuple(row) for row in cur.execute(sql, params)}
    except errors as err:
        raise translate_error(err) from err
    if narrow:
        return load_runs(conn, list(rows), sqlite=sqlite)
    return load_runs(conn, list(rows), sqlite=sqlite, rows=rows)


def _metric_page(
    conn: Any,
    *,
    deleted: bool,
    project: str | None,
    where: Node | None,
    sort: SortKey,
    limit: int,
    offset: int,
    sqlite: bool,
) -> list[str]:
    """The ids of a page of runs sorted by a metric: those with a finite value first, from the
    ``(key, value)`` index (the first page of 100,000 runs in a millisecond), then the others by id."""
    queries = metric_page_queries(deleted=deleted, project=project, where=where, sort=sort, sqlite=sqlite)
    cur = conn.cursor()
    if sqlite:
        cur.row_factory = None
    errors: tuple[type[Exception], ...] = (sqlite3.Error, *pg_errors())
    try:
        sql, params = queries["valued"]
        ids = [row[0] for row in cur.execute(sql, [*params, limit, offset])]
        if len(ids) < limit:
            if ids:  # the page holds the last valued runs: the others follow from the first
                skip = 0
            else:
                sql, params = queries["count"]
                skip = offset - int(cur.execute(sql, params).fetchone()[0])
            sql, params = queries["rest"]
            ids += [row[0] for row in cur.execute(sql, [*params, limit - len(ids), max(skip, 0)])]
    except errors as err:
        raise translate_error(err) from err
    return ids


def load_runs(
    conn: Any, ids: Sequence[str], *, sqlite: bool = True, rows: dict[str, tuple[Any, ...]] | None = None
) -> list[Run]:
    """Full run records for ``ids``, in the order given (missing ids skipped), from a ``sqlite3`` or
    psycopg connection: ``repos.runs.load_runs`` uses it (the driver's own connection, inside the
    caller's transaction), as the lean reader does. Statements go to the driver as written: building
    them through SQLAlchemy cost more than running them.
    """
    cur = conn.cursor()
    if sqlite:
        cur.row_factory = None
    mark = "?" if sqlite else "%s"
    errors: tuple[type[Exception], ...] = (sqlite3.Error, *pg_errors())
    known = rows is not None  # the run rows came with the filter's statement
    rows = rows if rows is not None else {}
    metrics: dict[str, dict[str, float]] = defaultdict(dict)
    arts: dict[str, list[tuple[str, Artifact]]] = defaultdict(list)
    try:
        for start in range(0, len(ids), _CHUNK):
            chunk = tuple(ids[start : start + _CHUNK])
            marks = ",".join([mark] * len(chunk))
            if not known:
                for row in cur.execute(f"SELECT {_full_columns(sqlite)} FROM runs WHERE runs.id IN ({marks})", chunk):
                    rows[row[0]] = row
            for run_id, key, value, kind in cur.execute(
                f"SELECT run_id, key, value, kind FROM run_latest WHERE run_id IN ({marks})", chunk
            ):
                metrics[run_id][key] = float(value) if kind == 0 and value is not None else _metric(value, kind)
            for run_id, name, role, kind, digest, size, path in cur.execute(
                "SELECT run_id, name, role, kind, digest, size, path FROM run_artifacts"
                f" WHERE run_id IN ({marks}) ORDER BY name",
                chunk,
            ):
                arts[run_id].append((role, Artifact(name, Digest(digest), kind, int(size), path)))
    except errors as err:
        raise translate_error(err) from err
    out = []
    fromiso = datetime.fromisoformat  # parse_time, inline: two calls per run
    for run_id in ids:
        row = rows.get(run_id)
        if row is None:
            continue
        (
            rid,
            project,
            name,
            status,
            started,
            ended,
            parent,
            user,
            host,
            code,
            error,
            seed,
            inputs,
            capture,
            deleted,
            params_doc,
            tags_doc,
        ) = row
        found = arts.get(run_id)
        out.append(
            _build_run(
                rid,
                project,
                name,
                status,
                fromiso(started + "+00:00") if started.__class__ is str else parse_time(started),
                None if ended is None else fromiso(ended + "+00:00") if ended.__class__ is str else parse_time(ended),
                parent,
                user,
                host,
                code,
                error,
                seed,
                tuple(json.loads(inputs)) if inputs != "[]" else (),
                LazyJSON(capture),
                parse_time(deleted) if deleted is not None else None,
                _document(cur, params_doc, run_id, "params", sqlite=sqlite),
                metrics.get(run_id) or {},
                _document(cur, tags_doc, run_id, "tags", sqlite=sqlite),
                tuple(a for role, a in found if role == "output") if found else (),
                tuple(a for _, a in found) if found else (),
            )
        )
    return out


def _document(cur: Any, doc: str | None, run_id: str, what: str, *, sqlite: bool) -> dict[str, Any]:
    """A run's params or tags from its JSON document; a document that does not decode (a stored
    value that is not the JSON labvault writes) is read again row by row, as it always was."""
    if doc is None:
        return {}
    try:
        found: dict[str, Any] = _loads(doc)
        return found
    except ValueError:
        pass
    table, column = ("run_params", "value") if what == "params" else ("run_tags", "text")
    sql = f"SELECT key, {column} FROM {table} WHERE run_id = {'?' if sqlite else '%s'}"
    errors: tuple[type[Exception], ...] = (sqlite3.Error, *pg_errors())
    try:
        found_rows = list(cur.execute(sql, (run_id,)))
    except errors as err:
        raise translate_error(err) from err
    if what == "params":
        return {key: _param(value) for key, value in found_rows}
    return dict(found_rows)
