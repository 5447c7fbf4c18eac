"""Validating decoders for records read from another vault: nothing a remote holds is trusted.

Each function takes the plain row(s) the transfer repository read and either returns them checked
(types, bounds, names, digests, JSON documents through ``safeload``) or raises
:class:`~labvault.errors.IntegrityError` naming the record: a remote whose database holds a crafted
row is damaged, and nothing of it is written here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labvault.errors import IntegrityError, LabvaultError
from labvault.refs import MAX_VERSION_PART, Digest, parse_ref, parse_semver, validate_name
from labvault.safeload import loads_json
from labvault.services.tracking.names import validate_key
from labvault.services.tracking.values import check_text
from labvault.storage.contained_paths import split_rel

__all__ = ["Record", "check_refs", "check_run", "check_snapshot", "check_version"]

_RUN_ID_RE = re.compile(r"[0-9a-f]{6,32}")
_MAX_TEXT = 1 << 20
_MAX_INT32 = 2**31 - 1
_DONE = ("finished", "failed", "killed")


@dataclass(slots=True)
class Record:
    """One immutable record on its way: ``kind`` is snapshot | run | version; ``key`` names it."""

    kind: str
    ref: str
    row: dict[str, Any]
    refs: list[tuple[Digest, str]] = field(default_factory=list)
    parts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # a run's child rows


class _Bad(Exception):
    pass


def _str(value: Any, what: str, *, limit: int = 4096, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Bad(f"{what} is not a text of at most {limit} characters")
    try:
        check_text(what, value, what="field")
    except LabvaultError as exc:
        raise _Bad(exc.message) from None
    return value


def _int(value: Any, what: str, *, low: int = 0, high: int = MAX_VERSION_PART, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"{what} {str(value)[:40]!r} is not a whole number from {low} to {high}")
    return value


def _num(value: Any, what: str) -> Any:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise _Bad(f"{what} is not a number")


def _time(value: Any, what: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, datetime):
        raise _Bad(f"{what} is not a time")
    return value


def _one_of(value: Any, what: str, allowed: tuple[Any, ...]) -> Any:
    if value not in allowed:
        raise _Bad(f"{what} {str(value)[:40]!r} is not one of {', '.join(map(str, allowed))}")
    return value


def _json(value: Any, what: str, kind: type) -> Any:
    text = _str(value, what, limit=8 * _MAX_TEXT)
    try:
        doc = loads_json(text, name=what)
    except LabvaultError as exc:
        raise _Bad(exc.message) from None
    if not isinstance(doc, kind):
        raise _Bad(f"{what} is not a JSON {kind.__name__}")
    return doc


def _digest(value: Any, what: str) -> Digest:
    try:
        return Digest(value) if isinstance(value, str) else Digest("")
    except LabvaultError:
        raise _Bad(f"{what} is not a sha256 digest") from None


def _name(value: Any, what: str) -> str:
    try:
        return validate_name(value, what=what) if isinstance(value, str) else validate_name("", what=what)
    except LabvaultError as exc:
        raise _Bad(exc.message) from None


def _rel(value: Any, what: str) -> str:
    text: str = _str(value, what)
    if text != ".":
        try:
            split_rel(text)
        except LabvaultError:
            raise _Bad(f"{what} {text[:80]!r} is not a relative path inside the project") from None
    return text


def _refused(ref: str, where: str, exc: Exception) -> IntegrityError:
    return IntegrityError(
        f"{ref} on {where} is malformed: {exc}",
        hint="the other vault's records are damaged or crafted; run `labvault fsck` there",
    )


def check_refs(raw: list[tuple[str, str]], *, ref: str, where: str) -> list[tuple[Digest, str]]:
    try:
        return [(_digest(d, "an object reference"), _one_of(k, "a reference kind", ("blob", "tree"))) for d, k in raw]
    except _Bad as exc:
        raise _refused(ref, where, exc) from None


def check_snapshot(row: dict[str, Any], *, ref: str, where: str) -> Record:
    try:
        _name(row.get("name"), "dataset name")
        _int(row.get("version"), "version", low=1)
        content = _digest(row.get("content_hash"), "content hash")
        _one_of(row.get("kind"), "kind", ("file", "dir"))
        if row.get("source_url") is None:
            _rel(row.get("storage_uri"), "storage path")
        else:
            _str(row.get("storage_uri"), "storage URL")
        _str(row.get("source_url"), "source URL", optional=True)
        _str(row.get("source_version"), "source version", optional=True)
        _int(row.get("file_count"), "file count", high=_MAX_INT32)
        _int(row.get("total_bytes"), "total bytes")
        row["tabular"] = bool(_one_of(row.get("tabular"), "tabular", (True, False, 0, 1)))
        _int(row.get("record_count"), "record count", optional=True)
        if row.get("schema_hash") is not None:
            _digest(row.get("schema_hash"), "schema hash")
        _time(row.get("created_at"), "created_at")
        _str(row.get("created_by"), "created_by", limit=320)
        _str(row.get("message"), "message", limit=_MAX_TEXT)
        notes = _json(row.get("notes"), "notes", list)
        for note in notes:
            _str(note, "a note")
    except _Bad as exc:
        raise _refused(ref, where, exc) from None
    return Record("snapshot", ref, row, refs=[(content, "tree")])


def check_version(row: dict[str, Any], *, ref: str, where: str) -> Record:
    try:
        version = _str(row.get("version"), "version", limit=64)
        try:
            parts = parse_semver(version)
        except LabvaultError as exc:
            raise _Bad(exc.message) from None
        if parts != (row.get("major"), row.get("minor"), row.get("patch")):
            raise _Bad("the version's parts do not match its number")
        tree = _digest(row.get("tree"), "tree")
        _digest(row.get("content"), "content")
        _int(row.get("size"), "size")
        _int(row.get("files"), "file count", high=_MAX_INT32)
        run_id = row.get("run_id")
        if run_id is not None and not (isinstance(run_id, str) and _RUN_ID_RE.fullmatch(run_id)):
            raise _Bad("the source run id is not a run id")
        _json(row.get("source"), "source", dict)
        for note in _json(row.get("notes"), "notes", list):
            _str(note, "a note")
        _str(row.get("message"), "message", limit=_MAX_TEXT, optional=True)
        _time(row.get("created_at"), "created_at")
        _str(row.get("created_by"), "created_by", limit=300)
    except _Bad as exc:
        raise _refused(ref, where, exc) from None
    return Record("version", ref, row, refs=[(tree, "tree")])


def _check_run_row(run: dict[str, Any], run_id: str) -> None:
    if run.get("id") != run_id or not _RUN_ID_RE.fullmatch(run_id):
        raise _Bad("the run id does not match")
    _name(run.get("project"), "project")
    _str(run.get("name"), "name", limit=256)
    _one_of(run.get("status"), "status", _DONE)
    parent = run.get("parent_id")
    if parent is not None and not (isinstance(parent, str) and _RUN_ID_RE.fullmatch(parent)):
        raise _Bad("the parent id is not a run id")
    _str(run.get("user"), "user", limit=256)
    _str(run.get("host"), "host", limit=256)
    _time(run.get("started_at"), "started_at")
    _time(run.get("ended_at"), "ended_at", optional=True)
    _int(run.get("exit_code"), "exit code", low=-(2**31), high=_MAX_INT32, optional=True)
    _str(run.get("error"), "error", limit=_MAX_TEXT, optional=True)
    _int(run.get("seed"), "seed", low=-(2**63), optional=True)
    for text in _json(run.get("inputs"), "inputs", list):
        try:
            parse_ref(_str(text, "an input"))
        except LabvaultError as exc:
            raise _Bad(exc.message) from None
    _json(run.get("capture"), "capture", dict)
    _time(run.get("deleted_at"), "deleted_at", optional=True)


def _check_part(part: str, row: dict[str, Any], run_id: str) -> None:
    if row.get("run_id") != run_id:
        raise _Bad(f"a {part} row belongs to another run")
    if part == "artifacts":
        _rel(row.get("name"), "artifact name")
        _one_of(row.get("role"), "artifact role", ("artifact", "output"))
        _one_of(row.get("kind"), "artifact kind", ("file", "tree"))
        _digest(row.get("digest"), "artifact digest")
        _int(row.get("size"), "artifact size")
        _str(row.get("path"), "artifact path", optional=True)
        _time(row.get("created_at"), "artifact created_at")
        return
    try:
        validate_key(row.get("key"), what=part)
    except LabvaultError as exc:
        raise _Bad(exc.message) from None
    if part == "params":
        _json_any(row.get("value"))
        _str(row.get("text"), "param text", limit=_MAX_TEXT)
        _num(row.get("num"), "param number")
    elif part == "tags":
        _str(row.get("text"), "tag text", limit=_MAX_TEXT)
        _num(row.get("num"), "tag number")
    else:  # metrics, latest
        _int(row.get("step"), "step", low=-(2**63))
        if part == "metrics":
            _int(row.get("ts_ms"), "timestamp", low=-(2**63))
        _num(row.get("value"), "metric value")
        _one_of(row.get("kind"), "metric kind", (0, 1, 2, 3))


def _json_any(value: Any) -> None:
    text = _str(value, "param value", limit=_MAX_TEXT)
    try:
        loads_json(text, name="param value")
    except LabvaultError as exc:
        raise _Bad(exc.message) from None


def check_run(doc: dict[str, Any], refs: list[tuple[str, str]], *, run_id: str, where: str) -> Record:
    ref = f"run:{run_id}"
    try:
        run = doc["run"]
        _check_run_row(run, run_id)
        parts = {}
        for part in ("params", "tags", "metrics", "latest", "artifacts"):
            rows = doc[part]
            for row in rows:
                _check_part(part, row, run_id)
            parts[part] = rows
    except _Bad as exc:
        raise _refused(ref, where, exc) from None
    checked = check_refs(refs, ref=ref, where=where)
    pointed = {d.hex for d, _ in checked}
    for row in parts["artifacts"]:
        if row["digest"] not in pointed:
            raise _refused(ref, where, _Bad(f"artifact {row['name']!r} points at an object the run does not own"))
    return Record("run", ref, run, refs=checked, parts=parts)


def inputs_of(record: Record) -> list[str]:
    """The data references a run read (already validated)."""
    return [t for t in json.loads(record.row["inputs"]) if t.startswith("data:")]
