"""Rows of the model registry <-> entities: models, versions, aliases (their move history and the
approvals are in ``registry_history``). Functions take a connection; they never commit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from labvault.entities import ModelVersion, RegisteredModel
from labvault.errors import StorageError
from labvault.refs import Digest
from labvault.storage.meta.prepared import Prepared
from labvault.storage.meta.tables.registry import (
    registry_aliases,
    registry_models,
    registry_versions,
)

__all__ = [
    "alias_row",
    "alias_states",
    "aliases_of",
    "aliases_on",
    "archive_version",
    "as_utc",
    "ensure_model",
    "find_version",
    "highest_live_version",
    "insert_or_ignore",
    "insert_version",
    "list_models",
    "list_versions",
    "model_and_highest",
    "model_id",
    "move_alias",
    "version_by_id",
    "version_row",
]

_VERSIONS = registry_versions
_ALIASES = registry_aliases


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they are UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def insert_or_ignore(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING on both SQLite and PostgreSQL."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


# -- models -------------------------------------------------------------------------------------
# The statements of the hot paths (register, promote, resolve) are prepared: see storage/meta/prepared.py.
_MODEL_ID = Prepared(
    sa.select(registry_models.c.id).where(
        registry_models.c.project == sa.bindparam("project"), registry_models.c.name == sa.bindparam("name")
    )
)


def model_id(conn: Connection, project: str, name: str) -> int | None:
    row = _MODEL_ID.first(conn, {"project": project, "name": name})
    return None if row is None else int(row[0])


def ensure_model(conn: Connection, project: str, name: str, *, actor: str, now: datetime) -> int:
    found = model_id(conn, project, name)
    if found is not None:
        return found
    stmt = insert_or_ignore(conn, registry_models).values(project=project, name=name, created_at=now, created_by=actor)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["project", "name"]))
    found = model_id(conn, project, name)
    if found is None:
        raise StorageError(f"model {project}/{name} is missing right after its insert")
    return found


_MODEL_AND_HIGHEST = Prepared(
    sa.select(
        registry_models.c.id,
        sa.select(_VERSIONS.c.version)
        .where(_VERSIONS.c.model_id == registry_models.c.id)
        .order_by(_VERSIONS.c.major.desc(), _VERSIONS.c.minor.desc(), _VERSIONS.c.patch.desc())
        .limit(1)
        .scalar_subquery(),
    ).where(registry_models.c.project == sa.bindparam("project"), registry_models.c.name == sa.bindparam("name"))
)


def model_and_highest(conn: Connection, project: str, name: str) -> tuple[int, str | None] | None:
    """``(model_id, highest version or None)`` in one query; None if no such model. Archived versions
    count: version numbers are never reused."""
    row = _MODEL_AND_HIGHEST.first(conn, {"project": project, "name": name})
    return None if row is None else (int(row[0]), None if row[1] is None else str(row[1]))


def list_models(conn: Connection) -> list[RegisteredModel]:
    models = conn.execute(sa.select(registry_models).order_by(registry_models.c.project, registry_models.c.name))
    out = []
    for m in models.mappings().all():
        versions = list_versions(conn, m["id"], include_archived=True)
        live = [v for v in versions if not v.archived]
        latest = max(live, key=lambda v: _key(v.version)).version if live else None
        out.append(
            RegisteredModel(
                project=m["project"],
                model=m["name"],
                created_at=as_utc(m["created_at"]) or m["created_at"],
                created_by=m["created_by"],
                versions=len(live),
                latest=latest,
                aliases=aliases_of(conn, m["id"]),
            )
        )
    return out


# -- versions -----------------------------------------------------------------------------------
def _key(version: str) -> tuple[int, int, int]:
    a, b, c = version.split(".")
    return int(a), int(b), int(c)


def _version_select() -> sa.Select[Any]:
    return sa.select(_VERSIONS, registry_models.c.project, registry_models.c.name.label("model")).join(
        registry_models, registry_models.c.id == _VERSIONS.c.model_id
    )


def _to_version(row: Mapping[Any, Any], aliases: tuple[str, ...] = ()) -> ModelVersion:
    return ModelVersion(
        project=row["project"],
        model=row["model"],
        version=row["version"],
        tree=Digest(row["tree"]),
        content=Digest(row["content"]),
        size=int(row["size"]),
        files=int(row["files"]),
        created_at=as_utc(row["created_at"]) or row["created_at"],
        created_by=row["created_by"],
        run_id=row["run_id"],
        message=row["message"],
        source=json.loads(row["source"]),
        notes=tuple(json.loads(row["notes"])),
        archived_at=as_utc(row["archived_at"]),
        aliases=aliases,
    )


_VERSION_ROW = _version_select().where(
    _VERSIONS.c.model_id == sa.bindparam("model"), _VERSIONS.c.version == sa.bindparam("version")
)
_INSERT_VERSION = Prepared(
    sa.insert(_VERSIONS).returning(_VERSIONS.c.id), keys=[c.key for c in _VERSIONS.columns if c.key != "id"]
)


def version_row(
    conn: Connection, model: int, version: str, *, with_aliases: bool = True
) -> tuple[int, ModelVersion] | None:
    row = conn.execute(_VERSION_ROW, {"model": model, "version": version}).mappings().first()
    if row is None:
        return None
    return int(row["id"]), _to_version(row, aliases_on(conn, int(row["id"])) if with_aliases else ())


_BY_NAME = _version_select().where(
    registry_models.c.project == sa.bindparam("project"), registry_models.c.name == sa.bindparam("model")
)
_FIND_VERSION = Prepared(_BY_NAME.where(_VERSIONS.c.version == sa.bindparam("name")))
_FIND_ALIAS = Prepared(
    _BY_NAME.join(
        _ALIASES, sa.and_(_ALIASES.c.version_id == _VERSIONS.c.id, _ALIASES.c.model_id == _VERSIONS.c.model_id)
    ).where(_ALIASES.c.name == sa.bindparam("name"))
)


_HIGHEST_LIVE = Prepared(
    _version_select()
    .where(_VERSIONS.c.model_id == sa.bindparam("model"), _VERSIONS.c.archived_at.is_(None))
    .order_by(_VERSIONS.c.major.desc(), _VERSIONS.c.minor.desc(), _VERSIONS.c.patch.desc())
    .limit(1)
)


def highest_live_version(conn: Connection, model: int) -> ModelVersion | None:
    """The highest version of the model that is not archived, with its aliases."""
    row = _HIGHEST_LIVE.mapping(conn, {"model": model})
    return None if row is None else _to_version(row, aliases_on(conn, int(row["id"])))


def find_version(
    conn: Connection, project: str, model: str, version: str, *, alias: bool
) -> tuple[int, int, ModelVersion] | None:
    """``(model_id, version_id, version)`` for a version number or an alias, in one query."""
    params = {"project": project, "model": model, "name": version}
    row = (_FIND_ALIAS if alias else _FIND_VERSION).mapping(conn, params)
    if row is None:
        return None
    return int(row["model_id"]), int(row["id"]), _to_version(row)


_ALIAS_STATES = Prepared(
    sa.select(_ALIASES.c.name, _ALIASES.c.version_id, _VERSIONS.c.version, _ALIASES.c.lock_version)
    .outerjoin(_VERSIONS, _VERSIONS.c.id == _ALIASES.c.version_id)
    .where(
        _ALIASES.c.model_id == sa.bindparam("model"),
        _ALIASES.c.name.in_([sa.bindparam("first"), sa.bindparam("second")]),
    )
)


def alias_states(conn: Connection, model: int, names: list[str]) -> dict[str, tuple[int | None, str | None, int]]:
    """alias -> ``(version_id, version, lock_version)`` for those that exist (one or two), in one query."""
    if not 1 <= len(names) <= 2:
        raise ValueError("alias_states reads one or two aliases")
    rows = _ALIAS_STATES.all(conn, {"model": model, "first": names[0], "second": names[-1]})
    return {r[0]: (None if r[1] is None else int(r[1]), r[2], int(r[3])) for r in rows}


def version_by_id(conn: Connection, version_id: int) -> ModelVersion:
    row = conn.execute(_version_select().where(_VERSIONS.c.id == version_id)).mappings().one()
    return _to_version(row)


def list_versions(conn: Connection, model: int, *, include_archived: bool = False) -> list[ModelVersion]:
    stmt = _version_select().where(_VERSIONS.c.model_id == model)
    if not include_archived:
        stmt = stmt.where(_VERSIONS.c.archived_at.is_(None))
    rows = conn.execute(stmt.order_by(_VERSIONS.c.major, _VERSIONS.c.minor, _VERSIONS.c.patch)).mappings().all()
    by_version: dict[int, list[str]] = {}
    for alias, vid in conn.execute(
        sa.select(_ALIASES.c.name, _ALIASES.c.version_id).where(
            _ALIASES.c.model_id == model, _ALIASES.c.version_id.is_not(None)
        )
    ):
        by_version.setdefault(int(vid), []).append(alias)
    return [_to_version(r, tuple(sorted(by_version.get(int(r["id"]), [])))) for r in rows]


def insert_version(conn: Connection, **values: Any) -> int:
    major, minor, patch = _key(values["version"])
    values = {**values, "major": major, "minor": minor, "patch": patch}
    values["source"] = json.dumps(values.get("source") or {}, sort_keys=True)
    values["notes"] = json.dumps(list(values.get("notes") or []))
    values.setdefault("archived_at", None)
    values.setdefault("archived_by", None)
    row = _INSERT_VERSION.first(conn, values)
    if row is None:
        raise StorageError(f"the insert of version {values['version']} returned no id")
    return int(row[0])


def archive_version(conn: Connection, version_id: int, *, actor: str, now: datetime) -> None:
    conn.execute(sa.update(_VERSIONS).where(_VERSIONS.c.id == version_id).values(archived_at=now, archived_by=actor))


# -- aliases ------------------------------------------------------------------------------------
_ALIASES_ON = Prepared(
    sa.select(_ALIASES.c.name).where(_ALIASES.c.version_id == sa.bindparam("version")).order_by(_ALIASES.c.name)
)


def aliases_on(conn: Connection, version_id: int) -> tuple[str, ...]:
    """The aliases that point at a version, sorted."""
    return tuple(r[0] for r in _ALIASES_ON.all(conn, {"version": version_id}))


def aliases_of(conn: Connection, model: int) -> dict[str, str]:
    """alias -> version, for the aliases that are set."""
    rows = conn.execute(
        sa.select(_ALIASES.c.name, _VERSIONS.c.version)
        .join(_VERSIONS, _VERSIONS.c.id == _ALIASES.c.version_id)
        .where(_ALIASES.c.model_id == model)
        .order_by(_ALIASES.c.name)
    )
    return {r[0]: r[1] for r in rows}


_ALIAS_ROW_SELECT = sa.select(_ALIASES.c.version_id, _ALIASES.c.lock_version).where(
    _ALIASES.c.model_id == sa.bindparam("model"), _ALIASES.c.name == sa.bindparam("alias")
)
_ALIAS_ROW = Prepared(_ALIAS_ROW_SELECT)
_ALIAS_ROW_FOR_UPDATE = Prepared(_ALIAS_ROW_SELECT.with_for_update())
_MOVE_ALIAS = Prepared(
    sa.update(_ALIASES)
    .where(
        _ALIASES.c.model_id == sa.bindparam("m"),
        _ALIASES.c.name == sa.bindparam("a"),
        _ALIASES.c.lock_version == sa.bindparam("lock"),
    )
    .values(
        version_id=sa.bindparam("v"),
        lock_version=sa.bindparam("next_lock"),
        updated_at=sa.bindparam("now"),
        updated_by=sa.bindparam("actor"),
    )
)


def alias_row(conn: Connection, model: int, alias: str, *, for_update: bool = False) -> tuple[int | None, int]:
    """``(version_id or None, lock_version)``; ``(None, 0)`` for an alias never set."""
    row = (_ALIAS_ROW_FOR_UPDATE if for_update else _ALIAS_ROW).first(conn, {"model": model, "alias": alias})
    if row is None:
        return None, 0
    return (None if row[0] is None else int(row[0])), int(row[1])


def move_alias(
    conn: Connection,
    model: int,
    alias: str,
    *,
    version_id: int | None,
    expected_lock: int,
    actor: str,
    now: datetime,
) -> bool:
    """Point ``alias`` at ``version_id`` if nobody moved it since ``expected_lock`` was read."""
    if expected_lock == 0:
        stmt = insert_or_ignore(conn, _ALIASES).values(
            model_id=model, name=alias, version_id=version_id, lock_version=1, updated_at=now, updated_by=actor
        )
        # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
        result = conn.execute(
            stmt.on_conflict_do_nothing(index_elements=["model_id", "name"]).returning(_ALIASES.c.name)
        )
        return result.first() is not None
    params = {
        "m": model,
        "a": alias,
        "lock": expected_lock,
        "v": version_id,
        "next_lock": expected_lock + 1,
        "now": now,
        "actor": actor,
    }
    return _MOVE_ALIAS.run(conn, params) == 1
