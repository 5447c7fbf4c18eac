"""Where each record lands on the receiving side, and the one transaction that writes them all.

Immutable records travel as they are: a run by its id, a snapshot or a model version by name and
number. The same content already there is a no-op. Different content under an existing number is
a conflict naming both, unless ``rename`` gives it the next free number (a pull always resolves
snapshots by content, so ``labvault.lock`` finds the data whatever number it has here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labvault.errors import Conflict
from labvault.refs import parse_semver
from labvault.services.audit import AuditLog
from labvault.services.remotes.records import Record, inputs_of
from labvault.services.remotes.side import Side
from labvault.storage.meta.repos import transfer as repo
from labvault.storage.meta.repos.object_refs import add_refs
from labvault.storage.meta.repos.registry import ensure_model
from labvault.storage.meta.store import Connection

__all__ = ["Landing", "decide", "merge_landings", "renamed_inputs", "write_records"]

_VERSION_FIELDS = (
    "version",
    "major",
    "minor",
    "patch",
    "tree",
    "content",
    "size",
    "files",
    "run_id",
    "source",
    "message",
    "notes",
    "created_at",
    "created_by",
)


@dataclass(frozen=True, slots=True)
class Landing:
    """What happens to one record: ``new`` (written as it is), ``renamed`` (written as ``target``),
    ``present`` (already there, as ``target``)."""

    record: Record
    action: str
    target: str

    @property
    def writes(self) -> bool:
        return self.action != "present"


def _conflict(record: Record, here: str, there_hash: str, theirs: str, *, side: Side) -> Conflict:
    return Conflict(
        f"{record.ref} differs: sha256:{there_hash[:12]} on {side.where}, sha256:{theirs[:12]} being sent",
        hint="rerun with --rename to give it the next free number there",
    )


def _snapshot(conn: Connection, record: Record, *, rename: bool, by_content: bool, side: Side) -> Landing:
    name, version, content = record.row["name"], record.row["version"], record.row["content_hash"]
    versions = dict(repo.snapshot_versions(conn, name))
    if versions.get(version) == content:
        return Landing(record, "present", record.ref)
    same = [v for v, h in versions.items() if h == content]
    if same and (by_content or rename):
        return Landing(record, "present", f"data:{name}@v{max(same)}")
    if version not in versions:
        return Landing(record, "new", record.ref)
    if not (rename or by_content):
        raise _conflict(record, side.where, versions[version], content, side=side)
    return Landing(record, "renamed", f"data:{name}@v{max(versions) + 1}")


def _run(conn: Connection, record: Record, *, side: Side) -> Landing:
    status = repo.run_status_of(conn, record.row["id"])
    if status is None:
        return Landing(record, "new", record.ref)
    if status != record.row["status"]:
        raise Conflict(
            f"{record.ref} is {status} on {side.where} and {record.row['status']} here",
            hint="a run travels once it has finished; finish it where it runs",
        )
    return Landing(record, "present", record.ref)


def _version(conn: Connection, record: Record, *, rename: bool, side: Side) -> Landing:
    project, model, version = record.row["project"], record.row["model"], record.row["version"]
    mid = repo.model_row_id(conn, project, model)
    versions = dict(repo.model_versions(conn, mid)) if mid is not None else {}
    content = record.row["content"]
    if versions.get(version) == content:
        return Landing(record, "present", record.ref)
    if version not in versions:
        return Landing(record, "new", record.ref)
    same = [v for v, c in versions.items() if c == content]
    if rename and same:
        return Landing(record, "present", f"{project}/{model}@{max(same, key=parse_semver)}")
    if not rename:
        raise _conflict(record, side.where, versions[version], content, side=side)
    major, minor, patch = max(parse_semver(v) for v in versions)
    return Landing(record, "renamed", f"{project}/{model}@{major}.{minor}.{patch + 1}")


def decide(conn: Connection, records: list[Record], *, dst: Side, rename: bool, by_content: bool) -> list[Landing]:
    out = []
    for record in records:
        if record.kind == "snapshot":
            out.append(_snapshot(conn, record, rename=rename, by_content=by_content, side=dst))
        elif record.kind == "run":
            out.append(_run(conn, record, side=dst))
        else:
            out.append(_version(conn, record, rename=rename, side=dst))
    return out


def write_records(dst: Side, records: list[Record], *, rename: bool, by_content: bool, origin: str) -> list[Landing]:
    """Decide again and write every record in one transaction on ``dst`` (its objects are there)."""
    audit = AuditLog(meta=dst.meta, vault_dir=dst.dir)
    events = []
    with dst.meta.transaction() as conn:
        head = audit.lock(conn) if any(r.kind == "version" for r in records) else None
        landings = decide(conn, records, dst=dst, rename=rename, by_content=by_content)
        for landing in landings:
            if not landing.writes:
                continue
            record = landing.record
            if record.kind == "snapshot":
                row = {**record.row, "version": int(landing.target.rsplit("@v", 1)[1])}
                repo.insert_snapshot_row(conn, row)
                add_refs(conn, landing.target, record.refs)  # type: ignore[arg-type]
            elif record.kind == "run":
                repo.insert_run_record(conn, {"run": record.row, **record.parts})
                add_refs(conn, record.ref, record.refs)  # type: ignore[arg-type]
            else:
                event, head = _write_version(conn, dst, landing, audit, head, origin)
                events.append(event)
    for event in events:
        audit.publish(event)
    return landings


def _write_version(
    conn: Connection, dst: Side, landing: Landing, audit: AuditLog, head: Any, origin: str
) -> tuple[Any, Any]:
    record = landing.record
    row = dict(record.row)
    version = landing.target.rsplit("@", 1)[1]
    row["version"] = version
    row["major"], row["minor"], row["patch"] = parse_semver(version)
    mid = ensure_model(conn, row["project"], row["model"], actor=dst.user, now=row["created_at"])
    event = audit.append(
        conn,
        actor=dst.user,
        action="register",
        subject=landing.target,
        after=f"sha256:{row['content']}",
        details={
            "tree": f"sha256:{row['tree']}",
            "size": row["size"],
            "files": row["files"],
            "run": row["run_id"],
            "received_from": origin,
            "registered_as": record.ref,
            "registered_by": row["created_by"],
        },
        head=head,
    )
    repo.insert_version_row(conn, mid, row, _VERSION_FIELDS)
    add_refs(conn, landing.target, record.refs)  # type: ignore[arg-type]
    return event, (event.seq, event.hash)


def merge_landings(first: list[Landing], written: list[Landing]) -> list[Landing]:
    """``first``, each landing replaced by the one written for the same record, if any."""
    by_ref = {landing.record.ref: landing for landing in written}
    return [by_ref.get(landing.record.ref, landing) for landing in first]


def renamed_inputs(landings: list[Landing]) -> list[str]:
    """A run whose input snapshot landed under another number names that number in its record."""
    moved = {lg.record.ref: lg.target for lg in landings if lg.record.kind == "snapshot" and lg.target != lg.record.ref}
    out = []
    for landing in landings:
        if landing.record.kind == "run" and moved:
            for text in inputs_of(landing.record):
                if text in moved:
                    out.append(f"{landing.record.ref} read {text}, which is {moved[text]} on the receiving side")
    return out
