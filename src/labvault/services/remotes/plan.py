"""What a push or pull moves: the records the references name, with everything they need.

A snapshot is its row and its tree; a run is its rows, every object it owns (environment, patch,
configs, artifacts) and, unless ``no_data``, the snapshots it read; a model version is its row, its
tree and its source run. Records are read from the sending side and validated there
(``records.py``): on a pull the sending side is the remote, whose database is untrusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from labvault.errors import IntegrityError, NotFound, ValidationError
from labvault.refs import DataRef, DigestRef, ModelRef, RunRef, parse_ref
from labvault.services.remotes.records import Record, check_run, check_snapshot, check_version, inputs_of
from labvault.services.remotes.side import Side
from labvault.services.snapshots.lockfile import LockEntry
from labvault.storage.meta.repos import transfer as repo

__all__ = ["Plan", "Side", "gather"]


@dataclass(slots=True)
class Plan:
    records: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def add(self, record: Record) -> None:
        if record.ref not in self._seen:
            self._seen.add(record.ref)
            self.records.append(record)

    def ordered(self) -> list[Record]:
        rank = {"snapshot": 0, "run": 1, "version": 2}
        return sorted(self.records, key=lambda r: rank[r.kind])


def _malformed(ref: str, side: Side, exc: Exception) -> IntegrityError:
    return IntegrityError(
        f"{ref} on {side.where} cannot be read: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
        hint="the other vault's records are damaged or crafted; run `labvault fsck` there",
    )


def _read(side: Side, ref: str, read: Callable[[Any], Any]) -> Any:
    # A crafted SQLite row can hold any type in any column: the driver's conversions fail on it.
    try:
        with side.meta.read() as conn:
            return read(conn)
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise _malformed(ref, side, exc) from exc


def _snapshot(side: Side, name: str, version: int | None, *, content: str | None = None) -> Record:
    shown = f"data:{name}" + (f"@v{version}" if version is not None else "")

    def read(conn: Any) -> Any:
        if content is not None:
            return repo.find_snapshot_by_content(conn, name, content)
        number = version
        if number is None:
            versions = repo.snapshot_versions(conn, name)
            number = versions[-1][0] if versions else None
        return None if number is None else repo.snapshot_row(conn, name, number)

    row = _read(side, shown, read)
    if row is None:
        what = f"data:{name} with content sha256:{content}" if content else shown
        raise NotFound(f"{side.where} has no {what}", hint="list its datasets with `labvault data list` there")
    ref = f"data:{row.get('name')}@v{row.get('version')}"
    return check_snapshot(row, ref=ref, where=side.where)


def _run(side: Side, run_id: str) -> Record:
    ref = f"run:{run_id}"
    doc = _read(side, ref, lambda conn: repo.run_record(conn, run_id))
    if doc is None:
        raise NotFound(f"{side.where} has no {ref}", hint="list its runs with `labvault runs list` there")
    if doc["run"].get("status") == "running":
        raise ValidationError(f"{ref} is still running; only finished runs travel", hint="finish the run first")
    refs = _read(side, ref, lambda conn: repo.owner_refs(conn, ref))
    return check_run(doc, refs, run_id=run_id, where=side.where)


def _version(side: Side, project: str, model: str, version: str) -> Record:
    ref = f"{project}/{model}@{version}"
    row = _read(side, ref, lambda conn: repo.version_record(conn, project, model, version))
    if row is None:
        raise NotFound(f"{side.where} has no {ref}", hint="list versions with `labvault models versions` there")
    record = check_version(row, ref=ref, where=side.where)
    record.row["project"], record.row["model"] = project, model
    return record


def _with_inputs(plan: Plan, side: Side, record: Record) -> None:
    for text in inputs_of(record):
        data = parse_ref(text)
        if not isinstance(data, DataRef) or data.number is None:
            continue
        try:
            plan.add(_snapshot(side, data.name, data.number))
        except NotFound:
            plan.warnings.append(f"{record.ref} read {text}, which {side.where} does not have")


def _add_run(plan: Plan, side: Side, run_id: str, *, no_data: bool) -> None:
    record = _run(side, run_id)
    if not no_data:
        _with_inputs(plan, side, record)
    plan.add(record)


def gather(
    side: Side,
    refs: Iterable[str],
    *,
    lock: Iterable[LockEntry] = (),
    everything: bool = False,
    no_data: bool = False,
) -> Plan:
    """The records to send, read and validated from ``side``."""
    plan = Plan()
    for entry in lock:
        plan.add(_snapshot(side, entry.ref.name, None, content=entry.content_hash.hex))
    if everything:
        _gather_all(plan, side, no_data=no_data)
    for text in refs:
        ref = parse_ref(text) if not _is_bare_id(text) else RunRef(text)
        if isinstance(ref, DataRef):
            plan.add(_snapshot(side, ref.name, ref.number))
        elif isinstance(ref, RunRef):
            _add_run(plan, side, side.resolve_run(str(ref)), no_data=no_data)
        elif isinstance(ref, ModelRef):
            project, model, version = side.resolve_model(text)
            record = _version(side, project, model, version)
            run_id = record.row.get("run_id")
            if run_id:
                try:
                    _add_run(plan, side, run_id, no_data=no_data)
                except NotFound:
                    plan.warnings.append(f"{record.ref} came from run:{run_id}, which {side.where} does not have")
            plan.add(record)
        elif isinstance(ref, DigestRef):
            raise ValidationError(
                f"{text} names an object, not a record", hint="push a snapshot, a run or a model version"
            )
    return plan


def _is_bare_id(text: str) -> bool:
    return len(text) >= 6 and all(c in "0123456789abcdef" for c in text)


def _gather_all(plan: Plan, side: Side, *, no_data: bool) -> None:
    listing = _read(side, "the record list", repo.all_records)
    for name, version in listing["snapshots"]:
        plan.add(_snapshot(side, name, version))
    for run_id in listing["runs"]:
        _add_run(plan, side, run_id, no_data=no_data)
    for project, model, version in listing["versions"]:
        plan.add(_version(side, project, model, version))


def describe(record: Record) -> dict[str, Any]:
    """A record's JSON summary (used by dry runs)."""
    return {"ref": record.ref, "kind": record.kind, "objects": len(record.refs)}
