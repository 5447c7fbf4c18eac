"""Set-based reads of the recorded links that lineage walks: run inputs, parents, reproductions,
versions made from runs, aliases on versions, and the owners of an object.

Every function answers for a whole frontier in one or a few statements, never one per node: a
snapshot read by 90,000 runs costs a scan, not 90,000 seeks. Functions take a connection and never
commit.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.storage.meta.tables import data_snapshots, object_refs, run_tags, runs
from labvault.storage.meta.tables.registry import registry_aliases, registry_models, registry_versions

__all__ = [
    "RunLinks",
    "VersionLinks",
    "aliases_on",
    "children_of",
    "existing_snapshots",
    "object_owners",
    "readers_of",
    "reproductions_of",
    "run_links",
    "versions_from",
    "versions_named",
]

_CHUNK = 500
# Past this many ids, reading the whole (small, indexed) link table beats chunked IN lists.
_WHOLE_TABLE = 2_000


@dataclass(frozen=True, slots=True)
class RunLinks:
    """What a run's row says it came from."""

    id: str
    project: str
    name: str
    status: str
    parent_id: str | None
    inputs: tuple[str, ...]
    capture: dict[str, Any]
    deleted: bool


@dataclass(frozen=True, slots=True)
class VersionLinks:
    id: int
    ref: str
    run_id: str | None
    archived_at: datetime | None


def _chunks(items: Collection[str]) -> Iterator[list[str]]:
    ordered = sorted(items)
    for i in range(0, len(ordered), _CHUNK):
        yield ordered[i : i + _CHUNK]


def _loads(text: str | None, default: Any) -> Any:
    # The row is untrusted (it may have been pulled from another vault): a malformed document is no link.
    try:
        value = json.loads(text) if text else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def run_links(conn: Connection, ids: Collection[str]) -> dict[str, RunLinks]:
    """The links of the runs ``ids`` that exist (deleted ones included, marked)."""
    out: dict[str, RunLinks] = {}
    cols = (runs.c.id, runs.c.project, runs.c.name, runs.c.status, runs.c.parent_id, runs.c.inputs, runs.c.capture)
    for chunk in _chunks(ids):
        for row in conn.execute(sa.select(*cols, runs.c.deleted_at).where(runs.c.id.in_(chunk))):
            inputs = _loads(row.inputs, [])
            out[row.id] = RunLinks(
                id=row.id,
                project=row.project,
                name=row.name,
                status=row.status,
                parent_id=row.parent_id,
                inputs=tuple(str(i) for i in inputs if isinstance(i, str)),
                capture=_loads(row.capture, {}),
                deleted=row.deleted_at is not None,
            )
    return out


def readers_of(conn: Connection, refs: Collection[str]) -> dict[str, list[str]]:
    """``{data ref: [live run ids that list it among their inputs]}``, in one scan of the runs."""
    if not refs:
        return {}
    # Inputs are stored as a JSON list of parsed references (no quote or backslash in them), so the
    # quoted reference found in the text is the element itself: ``"data:x@v1"`` never matches
    # ``data:x@v10``. A row whose text has a backslash is decoded instead of trusted.
    quoted = {json.dumps(r): r for r in refs}
    patterns = [runs.c.inputs.like("%" + _escape(q) + "%", escape="\\") for q in sorted(quoted)]
    out: dict[str, list[str]] = {r: [] for r in refs}
    # The text comes back only for rows that need more than the LIKE: several refs to tell apart,
    # or a backslash to decode. A snapshot read by 90,000 runs then fetches 90,000 ids, not lists.
    odd = runs.c.inputs.like("%\\\\%", escape="\\")
    text = runs.c.inputs if len(quoted) > 1 else sa.case((odd, runs.c.inputs), else_=sa.null())
    stmt = sa.select(runs.c.id, text).where(sa.or_(*patterns), runs.c.deleted_at.is_(None))
    (only,) = quoted.values() if len(quoted) == 1 else (None,)
    # fetchall: one call into the driver for 90,000 rows, not a fetchone each.
    for run_id, inputs in conn.execute(stmt).fetchall():
        if inputs is None:  # the one ref, matched exactly by its quoted form
            out[str(only)].append(run_id)
        elif "\\" in inputs:
            listed = {i for i in _loads(inputs, []) if isinstance(i, str)}
            for ref in refs:
                if ref in listed:
                    out[ref].append(run_id)
        else:
            for q, ref in quoted.items():
                if q in inputs:
                    out[ref].append(run_id)
    return out


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def children_of(conn: Connection, ids: Collection[str]) -> dict[str, list[str]]:
    """``{run id: [ids of the live runs nested in it]}``."""
    return _pairs(
        conn, sa.select(runs.c.parent_id, runs.c.id).where(runs.c.deleted_at.is_(None)), runs.c.parent_id, ids
    )


def reproductions_of(conn: Connection, ids: Collection[str]) -> dict[str, list[tuple[str, str | None]]]:
    """``{run id: [(rerun id, its verdict or None while it has none)]}`` from the ``reproduces`` tags."""
    verdict = run_tags.alias("verdict")
    stmt = (
        sa.select(run_tags.c.text, run_tags.c.run_id, verdict.c.text.label("verdict"))
        .select_from(
            run_tags.outerjoin(
                verdict, sa.and_(verdict.c.run_id == run_tags.c.run_id, verdict.c.key == "reproduce_verdict")
            )
        )
        .where(run_tags.c.key == "reproduces")
    )
    out: dict[str, list[tuple[str, str | None]]] = {}
    wanted = set(ids)
    if len(wanted) > _WHOLE_TABLE:
        rows: Iterable[Any] = conn.execute(stmt)
    else:
        tags = [f"run:{i}" for i in wanted]
        rows = (row for chunk in _chunks(tags) for row in conn.execute(stmt.where(run_tags.c.text.in_(chunk))))
    for text, rerun, verdict_text in rows:
        original = text[4:] if text.startswith("run:") else None
        if original in wanted and rerun != original:
            out.setdefault(original, []).append((rerun, verdict_text))
    return out


def versions_from(conn: Connection, run_ids: Collection[str]) -> dict[str, list[VersionLinks]]:
    """``{run id: [the model versions registered from it]}``, archived ones included."""
    stmt = _version_select().where(registry_versions.c.run_id.is_not(None))
    out: dict[str, list[VersionLinks]] = {}
    wanted = set(run_ids)
    if len(wanted) > _WHOLE_TABLE:
        rows: Iterable[Any] = conn.execute(stmt)
    else:
        rows = (row for c in _chunks(wanted) for row in conn.execute(stmt.where(registry_versions.c.run_id.in_(c))))
    for row in rows:
        if row.run_id in wanted:
            out.setdefault(row.run_id, []).append(_version(row))
    return out


def _version_select() -> sa.Select[Any]:
    return sa.select(
        registry_versions.c.id,
        registry_models.c.project,
        registry_models.c.name,
        registry_versions.c.version,
        registry_versions.c.run_id,
        registry_versions.c.archived_at,
    ).select_from(registry_versions.join(registry_models, registry_models.c.id == registry_versions.c.model_id))


def _version(row: Any) -> VersionLinks:
    return VersionLinks(
        id=int(row.id),
        ref=f"{row.project}/{row.name}@{row.version}",
        run_id=row.run_id,
        archived_at=row.archived_at,
    )


def versions_named(conn: Connection, refs: Collection[str]) -> dict[str, VersionLinks]:
    """``{project/model@X.Y.Z: its links}`` for the versions among ``refs`` that exist."""
    out: dict[str, VersionLinks] = {}
    names = sorted({ref.rsplit("@", 1)[0] for ref in refs})
    for i in range(0, len(names), _CHUNK):
        chunk = names[i : i + _CHUNK]
        full = registry_models.c.project + "/" + registry_models.c.name
        for row in conn.execute(_version_select().where(full.in_(chunk))):
            version = _version(row)
            if version.ref in refs:
                out[version.ref] = version
    return out


def aliases_on(conn: Connection, version_ids: Collection[int]) -> dict[int, list[str]]:
    """``{version id: [the aliases that point at it now]}``."""
    out: dict[int, list[str]] = {}
    ordered = sorted(version_ids)
    for i in range(0, len(ordered), _CHUNK):
        stmt = sa.select(registry_aliases.c.version_id, registry_aliases.c.name).where(
            registry_aliases.c.version_id.in_(ordered[i : i + _CHUNK])
        )
        for row in conn.execute(stmt.order_by(registry_aliases.c.name)):
            out.setdefault(int(row.version_id), []).append(row.name)
    return out


def existing_snapshots(conn: Connection, refs: Collection[tuple[str, int]]) -> dict[tuple[str, int], str | None]:
    """``{(name, version): import URL or None}`` for the snapshots that exist among ``refs``."""
    out: dict[tuple[str, int], str | None] = {}
    names = sorted({name for name, _ in refs})
    for i in range(0, len(names), _CHUNK):
        stmt = sa.select(data_snapshots.c.name, data_snapshots.c.version, data_snapshots.c.source_url).where(
            data_snapshots.c.name.in_(names[i : i + _CHUNK])
        )
        for row in conn.execute(stmt):
            key = (row.name, int(row.version))
            if key in refs:
                out[key] = row.source_url
    return out


def object_owners(conn: Connection, prefix: str) -> dict[str, list[str]]:
    """``{full digest hex: [owner refs]}`` for the stored digests that start with ``prefix``."""
    stmt = sa.select(object_refs.c.digest, object_refs.c.owner)
    if len(prefix) == 64:
        stmt = stmt.where(object_refs.c.digest == prefix)
    else:  # hex only (parsed before), so nothing to escape; the range keeps it an index seek
        stmt = stmt.where(object_refs.c.digest >= prefix, object_refs.c.digest < prefix + "g")
    out: dict[str, list[str]] = {}
    for row in conn.execute(stmt.order_by(object_refs.c.digest, object_refs.c.owner)):
        out.setdefault(row.digest, []).append(row.owner)
    return out


def _pairs(conn: Connection, stmt: sa.Select[Any], key: Any, ids: Collection[str]) -> dict[str, list[str]]:
    wanted = set(ids)
    if len(wanted) > _WHOLE_TABLE:
        rows: Iterable[Any] = conn.execute(stmt.where(key.is_not(None)))
    else:
        rows = (row for c in _chunks(wanted) for row in conn.execute(stmt.where(key.in_(c))))
    out: dict[str, list[str]] = {}
    for parent, child in rows:
        if parent in wanted and parent != child:
            out.setdefault(parent, []).append(child)
    return out
