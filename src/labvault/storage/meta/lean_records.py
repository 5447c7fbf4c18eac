"""Run records from a ``sqlite3`` or psycopg connection: the one loader of full runs that the services
(``repos.runs.load_runs``) and the lean read commands share, and the row decoders the lean reader uses."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from datetime import UTC, datetime
from typing import Any

from labvault.entities import Artifact, Run
from labvault.errors import LabvaultError, LockedError, StorageError
from labvault.refs import Digest
from labvault.storage.meta.builders import record_builder
from labvault.storage.meta.lean_pg import pg_errors, translate_pg_error
from labvault.storage.meta.run_filter import Node, SortKey, metric_page_queries, runs_query

__all__ = ["RUN_COLUMNS", "LazyJSON", "load_runs", "parse_time", "select_runs", "translate_error"]

_CHUNK = 500  # ids per IN (...): well under SQLite's 32,766 bound parameters
_NON_FINITE = {1: float("nan"), 2: float("inf"), 3: float("-inf")}
_UNSET = object()
_INDEX_WALK = 20_000  # runs a page sorted by a metric may skip along the (key, value) index
# The run row's columns in RUN_COLUMNS order, then the values the other tables add.
_RUN_ORDER = (
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
    "params",
    "metrics",
    "tags",
    "outputs",
    "artifacts",
)
_build_run = record_builder(Run, _RUN_ORDER)


def parse_time(value: str | datetime | None) -> datetime | None:
    """SQLAlchemy stores SQLite datetimes as naive UTC text: ``2026-11-30 00:00:17.649620``;
    PostgreSQL gives them as aware datetimes."""
    if isinstance(value, str):
        # Parsing the offset is 8x faster than .replace(tzinfo=UTC), and gives the same UTC singleton.
        return datetime.fromisoformat(value + "+00:00")
    return None if value is None else value.astimezone(UTC)


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
            self._doc = json.loads(self._text)
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
RUN_COLUMNS = ", ".join(
    f"runs.{c}"
    for c in (
        "id",
        "project",
        "name",
        "status",
        "started_at",
        "ended_at",
        "parent_id",
        '"user"',
        "host",
        "exit_code",
        "error",
        "seed",
        "inputs",
        "capture",
        "deleted_at",
    )
)


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
    # A page of a sorted listing sorts the ids alone, then reads the page's rows: the sorter then
    # holds no capture documents (a page deep into 100,000 runs sorted 4x faster).
    narrow = sort is not None and limit is not None
    sql, params = runs_query(
        deleted=deleted,
        project=project,
        where=where,
        sort=sort,
        limit=limit,
        sqlite=sqlite,
        columns="runs.id" if narrow else RUN_COLUMNS,
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
    params: dict[str, dict[str, object]] = defaultdict(dict)
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    metrics: dict[str, dict[str, float]] = defaultdict(dict)
    arts: dict[str, list[tuple[str, Artifact]]] = defaultdict(list)
    seen: dict[str, object] = {}
    try:
        for start in range(0, len(ids), _CHUNK):
            chunk = tuple(ids[start : start + _CHUNK])
            marks = ",".join([mark] * len(chunk))
            if not known:
                for row in cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE runs.id IN ({marks})", chunk):
                    rows[row[0]] = row
            for run_id, key, value in cur.execute(
                f"SELECT run_id, key, value FROM run_params WHERE run_id IN ({marks})", chunk
            ):
                # Runs share their param values (lr=0.1, depth=4): decode each text once.
                decoded = seen.get(value, _UNSET)
                if decoded is _UNSET:
                    decoded = _param(value)
                    if not isinstance(decoded, list | dict):  # never share a mutable value between runs
                        seen[value] = decoded
                params[run_id][key] = decoded
            for run_id, key, text in cur.execute(
                f"SELECT run_id, key, text FROM run_tags WHERE run_id IN ({marks})", chunk
            ):
                tags[run_id][key] = text
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
        ) = row
        found = arts.get(run_id)
        out.append(
            _build_run(
                rid,
                project,
                name,
                status,
                parse_time(started),
                parse_time(ended) if ended is not None else None,
                parent,
                user,
                host,
                code,
                error,
                seed,
                tuple(json.loads(inputs)) if inputs != "[]" else (),
                LazyJSON(capture),
                parse_time(deleted) if deleted is not None else None,
                params.get(run_id) or {},
                metrics.get(run_id) or {},
                tags.get(run_id) or {},
                tuple(a for role, a in found if role == "output") if found else (),
                tuple(a for _, a in found) if found else (),
            )
        )
    return out
