"""Read-only queries on the metadata database through the standard ``sqlite3`` module, or psycopg.

The everyday read commands (``runs list``, ``models list``, ``audit log``, ...) spend far longer
importing SQLAlchemy than running their queries. :class:`LeanReader` answers them with the same
entities the repos build, from the same rows, so the output is the same. It opens only a database
whose schema is current, read-only (a PostgreSQL one through :mod:`.lean_pg`); anything else (a
schema to migrate, a missing file, a server it cannot reach) makes :func:`open_reader` return None
and the caller takes the full path.

Each method is the twin of a repo function, named in its docstring; the CLI tests run every read
command through both paths and compare the output byte for byte.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from labvault.entities import AuditEvent, ModelVersion, RegisteredModel, Run, Snapshot
from labvault.refs import Digest
from labvault.storage.meta.lean_pg import connect, pg_errors, translate_pg_error
from labvault.storage.meta.lean_records import load_runs, parse_time, translate_error
from labvault.storage.meta.lean_runs import RunReads

__all__ = ["LeanReader", "open_reader"]

_VERSIONS = Path(__file__).parent / "migrations" / "versions"
_BUSY_TIMEOUT_S = 30.0


def _known_revisions() -> str:
    # The same fingerprint as MetaStore.known_revisions (kept free of SQLAlchemy).
    names = sorted(n for n in os.listdir(_VERSIONS) if n.endswith(".py") and n[0] != "_")
    return ",".join(n[:-3] for n in names)


def _like_prefix(prefix: str) -> str:
    # SQLAlchemy's startswith(autoescape=True): '/' escapes itself, '%' and '_'.
    return prefix.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


@contextmanager
def open_reader(database_url: str | None, vault_dir: Path) -> Iterator[LeanReader | None]:
    """A reader in one read transaction, or None when the lean path cannot answer exactly."""
    if database_url is not None and database_url.startswith(("postgresql", "postgres://")):
        with _open_postgres(database_url) as reader:
            yield reader
        return
    if database_url is not None and not database_url.startswith("sqlite:///"):
        yield None
        return
    path = Path(database_url.removeprefix("sqlite:///")) if database_url else vault_dir / "meta.db"
    if not path.is_file():
        yield None
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
    except sqlite3.Error:
        yield None
        return
    with closing(conn):
        try:
            conn.execute("BEGIN")  # one snapshot for every query of the command
            row = conn.execute("SELECT value FROM vault_meta WHERE key = 'schema_revisions'").fetchone()
        except sqlite3.Error:
            row = None
        yield LeanReader(conn) if row is not None and row[0] == _known_revisions() else None


@contextmanager
def _open_postgres(url: str) -> Iterator[LeanReader | None]:
    conn = connect(url)
    if conn is None:
        yield None
        return
    with closing(conn):
        try:
            rows = conn.execute("SELECT value FROM vault_meta WHERE key = 'schema_revisions'").fetchall()
        except pg_errors():
            rows = []
        yield LeanReader(conn, sqlite=False) if rows and rows[0][0] == _known_revisions() else None


class LeanReader(RunReads):
    """Reads on a ``sqlite3`` connection, or on a psycopg one (``sqlite=False``)."""

    def __init__(self, conn: Any, *, sqlite: bool = True) -> None:
        self._conn = conn
        self.sqlite = sqlite

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if not self.sqlite:
            try:
                return list(self._conn.execute(sql.replace("?", "%s"), params).fetchall())
            except pg_errors() as err:
                raise translate_pg_error(err) from err
        self._conn.row_factory = sqlite3.Row
        try:
            rows: list[Any] = self._conn.execute(sql, params).fetchall()
            return rows
        except sqlite3.Error as err:
            raise translate_error(err) from err

    # -- runs (and the queries of RunReads) ---------------------------------------------------
    def runs(self, ids: list[str]) -> list[Run]:
        return load_runs(self._conn, ids, sqlite=self.sqlite)

    # -- registry ---------------------------------------------------------------------------
    _VERSION_SELECT = (
        "SELECT v.*, m.project AS project, m.name AS model FROM registry_versions v"
        " JOIN registry_models m ON m.id = v.model_id"
    )

    def model_id(self, project: str, name: str) -> int | None:
        rows = self._rows("SELECT id FROM registry_models WHERE project = ? AND name = ?", (project, name))
        return int(rows[0][0]) if rows else None

    def models(self) -> list[RegisteredModel]:
        """``repos.registry.list_models``."""
        out = []
        for m in self._rows("SELECT * FROM registry_models ORDER BY project, name"):
            live = [v for v in self.versions(int(m["id"]), include_archived=True) if not v.archived]
            latest = max(live, key=lambda v: tuple(int(p) for p in v.version.split("."))).version if live else None
            out.append(
                RegisteredModel(
                    project=m["project"],
                    model=m["name"],
                    created_at=cast(datetime, parse_time(m["created_at"])),
                    created_by=m["created_by"],
                    versions=len(live),
                    latest=latest,
                    aliases=self.aliases(int(m["id"])),
                )
            )
        return out

    def versions(self, model: int, *, include_archived: bool) -> list[ModelVersion]:
        """``repos.registry.list_versions``: oldest first, each with its aliases."""
        sql = self._VERSION_SELECT + " WHERE v.model_id = ?"
        if not include_archived:
            sql += " AND v.archived_at IS NULL"
        rows = self._rows(sql + " ORDER BY v.major, v.minor, v.patch", (model,))
        by_version: dict[int, list[str]] = {}
        for alias, vid in self._rows(
            "SELECT name, version_id FROM registry_aliases WHERE model_id = ? AND version_id IS NOT NULL", (model,)
        ):
            by_version.setdefault(int(vid), []).append(alias)
        return [_version(r, tuple(sorted(by_version.get(int(r["id"]), [])))) for r in rows]

    def find_version(self, project: str, model: str, name: str, *, alias: bool) -> ModelVersion | None:
        """``repos.registry.find_version`` then ``aliases_on``: a version by number or alias, with
        every alias that points at it."""
        sql = self._VERSION_SELECT
        if alias:
            sql += " JOIN registry_aliases a ON a.version_id = v.id AND a.model_id = v.model_id WHERE a.name = ?"
        else:
            sql += " WHERE v.version = ?"
        rows = self._rows(sql + " AND m.project = ? AND m.name = ?", (name, project, model))
        if not rows:
            return None
        names = self._rows("SELECT name FROM registry_aliases WHERE version_id = ? ORDER BY name", (rows[0]["id"],))
        return _version(rows[0], tuple(r[0] for r in names))

    def aliases(self, model: int) -> dict[str, str]:
        """``repos.registry.aliases_of``: alias -> version, for the aliases that are set."""
        rows = self._rows(
            "SELECT a.name, v.version FROM registry_aliases a JOIN registry_versions v ON v.id = a.version_id"
            " WHERE a.model_id = ? ORDER BY a.name",
            (model,),
        )
        return {r[0]: r[1] for r in rows}

    def audit_events(self, *, subject_prefix: str | None, action: str | None, limit: int | None) -> list[AuditEvent]:
        """``repos.audit.iter_events``, newest first."""
        sql, params = "SELECT * FROM audit_events WHERE 1 = 1", list[object]()
        if subject_prefix is not None:
            sql += " AND subject LIKE ? ESCAPE '/'"
            params.append(_like_prefix(subject_prefix))
        if action is not None:
            sql += " AND action = ?"
            params.append(action)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        out = []
        for r in self._rows(sql, tuple(params)):
            try:
                details: dict[str, Any] = json.loads(r["details"])
            except ValueError:
                details = {"unreadable": r["details"]}
            out.append(
                AuditEvent(
                    seq=int(r["seq"]),
                    at=cast(datetime, parse_time(r["at"])),
                    actor=r["actor"],
                    action=r["action"],
                    subject=r["subject"],
                    before=r["before"],
                    after=r["after"],
                    policy_hash=r["policy_hash"],
                    details=details,
                    prev_hash=r["prev_hash"],
                    hash=r["hash"],
                )
            )
        return out

    # -- data -------------------------------------------------------------------------------
    def datasets(self) -> list[tuple[Snapshot, int]]:
        """``repos.snapshots.latest_per_dataset``."""
        rows = self._rows(
            "SELECT s.*, n.n AS n FROM data_snapshots s JOIN (SELECT name, max(version) AS v, count(*) AS n"
            " FROM data_snapshots GROUP BY name) n ON s.name = n.name AND s.version = n.v ORDER BY s.name"
        )
        return [(_snapshot(r), int(r["n"])) for r in rows]

    def snapshot(self, name: str, version: int | None) -> Snapshot | None:
        """``repos.snapshots.get_snapshot``: the given version, or the latest."""
        sql, params = "SELECT * FROM data_snapshots WHERE name = ?", list[object]([name])
        if version is not None:
            sql += " AND version = ?"
            params.append(version)
        rows = self._rows(sql + " ORDER BY version DESC LIMIT 1", tuple(params))
        return _snapshot(rows[0]) if rows else None

    def snapshots(self, name: str) -> list[Snapshot]:
        """``repos.snapshots.list_versions``: newest first."""
        return [
            _snapshot(r)
            for r in self._rows("SELECT * FROM data_snapshots WHERE name = ? ORDER BY version DESC", (name,))
        ]


def _version(r: Any, aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        project=r["project"],
        model=r["model"],
        version=r["version"],
        tree=Digest(r["tree"]),
        content=Digest(r["content"]),
        size=int(r["size"]),
        files=int(r["files"]),
        created_at=cast(datetime, parse_time(r["created_at"])),
        created_by=r["created_by"],
        run_id=r["run_id"],
        message=r["message"],
        source=json.loads(r["source"]),
        notes=tuple(json.loads(r["notes"])),
        archived_at=parse_time(r["archived_at"]),
        aliases=aliases,
    )


def _snapshot(r: Any) -> Snapshot:
    return Snapshot(
        name=r["name"],
        version=r["version"],
        content_hash=Digest(r["content_hash"]),
        kind=r["kind"],
        storage_uri=r["storage_uri"],
        file_count=r["file_count"],
        total_bytes=r["total_bytes"],
        tabular=bool(r["tabular"]),
        record_count=r["record_count"],
        schema_hash=r["schema_hash"],
        created_at=cast(datetime, parse_time(r["created_at"])),
        created_by=r["created_by"],
        message=r["message"],
        source_url=r["source_url"],
        source_version=r["source_version"],
        notes=tuple(json.loads(r["notes"] or "[]")),
    )
