"""Whole records as plain rows, read from one vault's database and written into another's.

What push and pull move between vaults: a finished run with its params, tags, metric history and
artifacts; a snapshot row; a model version row. Rows come out as dicts of plain values (the caller
validates them: a remote's database is untrusted) and go in as they are. Repositories never commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.storage.meta.tables import (
    data_snapshots,
    object_refs,
    run_artifacts,
    run_latest,
    run_metrics,
    run_params,
    run_tags,
    runs,
)
from labvault.storage.meta.tables.registry import registry_models, registry_versions

__all__ = [
    "RUN_PARTS",
    "all_records",
    "find_snapshot_by_content",
    "insert_run_record",
    "insert_snapshot_row",
    "insert_version_row",
    "model_row_id",
    "owner_refs",
    "run_record",
    "run_status_of",
    "snapshot_row",
    "snapshot_versions",
    "version_record",
]

Row = dict[str, Any]

#: The child tables of a run, by the name a record carries them under.
RUN_PARTS: dict[str, sa.Table] = {
    "params": run_params,
    "tags": run_tags,
    "metrics": run_metrics,
    "latest": run_latest,
    "artifacts": run_artifacts,
}


def _rows(conn: Connection, query: Any) -> list[Row]:
    return [dict(r) for r in conn.execute(query).mappings()]


def run_status_of(conn: Connection, run_id: str) -> str | None:
    return conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()


def run_record(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """``{"run": row, "params": [...], ...}``; None when there is no such run."""
    found = _rows(conn, sa.select(runs).where(runs.c.id == run_id))
    if not found:
        return None
    doc: dict[str, Any] = {"run": found[0]}
    for part, table in RUN_PARTS.items():
        query = sa.select(table).where(table.c.run_id == run_id)
        if part == "metrics":
            query = query.order_by(table.c.id)
        doc[part] = _rows(conn, query)
    for row in doc["metrics"]:
        row.pop("id", None)  # the receiving database numbers its own history rows
    return doc


def insert_run_record(conn: Connection, doc: Mapping[str, Any]) -> None:
    conn.execute(sa.insert(runs), [dict(doc["run"])])
    for part, table in RUN_PARTS.items():
        rows = [dict(r) for r in doc[part]]
        for start in range(0, len(rows), 1000):
            conn.execute(sa.insert(table), rows[start : start + 1000])


def owner_refs(conn: Connection, owner: str) -> list[tuple[str, str]]:
    """``(digest hex, kind)`` of every object ``owner`` points at."""
    q = sa.select(object_refs.c.digest, object_refs.c.kind).where(object_refs.c.owner == owner)
    return [(str(d), str(k)) for d, k in conn.execute(q.order_by(object_refs.c.digest))]


# -- snapshots -------------------------------------------------------------------------------------
def snapshot_row(conn: Connection, name: str, version: int) -> Row | None:
    t = data_snapshots
    found = _rows(conn, sa.select(t).where(t.c.name == name, t.c.version == version))
    return found[0] if found else None


def snapshot_versions(conn: Connection, name: str) -> list[tuple[int, str]]:
    """``(version, content hash hex)`` of every version of a dataset, oldest first."""
    t = data_snapshots
    q = sa.select(t.c.version, t.c.content_hash).where(t.c.name == name).order_by(t.c.version)
    return [(int(v), str(h)) for v, h in conn.execute(q)]


def find_snapshot_by_content(conn: Connection, name: str, content_hash: str) -> Row | None:
    t = data_snapshots
    q = sa.select(t).where(t.c.name == name, t.c.content_hash == content_hash).order_by(t.c.version.desc())
    found = _rows(conn, q.limit(1))
    return found[0] if found else None


def insert_snapshot_row(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(sa.insert(data_snapshots), [dict(row)])


# -- model versions --------------------------------------------------------------------------------
def model_row_id(conn: Connection, project: str, name: str) -> int | None:
    m = registry_models
    found = conn.execute(sa.select(m.c.id).where(m.c.project == project, m.c.name == name)).scalar()
    return None if found is None else int(found)


def version_record(conn: Connection, project: str, name: str, version: str) -> Row | None:
    """The version's row without its database ids (``model_id``, ``id``) and archive state."""
    mid = model_row_id(conn, project, name)
    if mid is None:
        return None
    v = registry_versions
    found = _rows(conn, sa.select(v).where(v.c.model_id == mid, v.c.version == version))
    if not found:
        return None
    row = found[0]
    for key in ("id", "model_id", "archived_at", "archived_by"):
        row.pop(key, None)
    return row


def model_versions(conn: Connection, model_id: int) -> list[tuple[str, str]]:
    """``(version, content hex)`` of every version of a model."""
    v = registry_versions
    return [
        (str(a), str(b)) for a, b in conn.execute(sa.select(v.c.version, v.c.content).where(v.c.model_id == model_id))
    ]


def insert_version_row(conn: Connection, model_id: int, row: Mapping[str, Any], fields: Sequence[str]) -> int:
    values = {k: row[k] for k in fields}
    values.update(model_id=model_id, archived_at=None, archived_by=None)
    result = conn.execute(sa.insert(registry_versions).values(**values).returning(registry_versions.c.id))
    return int(result.scalar_one())


def all_records(conn: Connection) -> dict[str, list[Any]]:
    """Every snapshot, finished run not deleted, and model version (``--all``)."""
    t, v, m = data_snapshots, registry_versions, registry_models
    snaps = [
        (str(n), int(x)) for n, x in conn.execute(sa.select(t.c.name, t.c.version).order_by(t.c.name, t.c.version))
    ]
    done = runs.c.status.in_(("finished", "failed", "killed"))
    run_ids = [
        str(r)
        for r in conn.execute(
            sa.select(runs.c.id).where(done, runs.c.deleted_at.is_(None)).order_by(runs.c.id)
        ).scalars()
    ]
    q = sa.select(m.c.project, m.c.name, v.c.version).join(m, m.c.id == v.c.model_id).where(v.c.archived_at.is_(None))
    versions = [
        (str(a), str(b), str(c))
        for a, b, c in conn.execute(q.order_by(m.c.project, m.c.name, v.c.major, v.c.minor, v.c.patch))
    ]
    return {"snapshots": snaps, "runs": run_ids, "versions": versions}
