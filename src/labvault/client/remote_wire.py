"""Immutable records on the wire between a vault and a labvault server (push and pull through the API).

A record travels as ``{"kind", "row", "refs", "parts"}``: the plain rows the transfer repository
reads, with times as ``{"$t": ISO-8601}`` and non-finite floats as ``{"$f": "NaN"}`` (JSON has
neither). Its reference is never taken from the wire: it is rebuilt from the row. Both ends decode
what they receive with :func:`decode_records`, which keeps only the columns a record has and runs
the validators a local push or pull runs (``services/remotes/records.py``): the server trusts no
client, and a client trusts no server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from labvault.errors import IntegrityError, LabvaultError
from labvault.refs import validate_name
from labvault.services.remotes.records import Record, check_run, check_snapshot, check_version

__all__ = ["MAX_RECORDS", "decode_records", "encode_record", "encode_records"]

#: The most records one request may carry.
MAX_RECORDS = 100_000

_SNAPSHOT = frozenset(
    (
        "name",
        "version",
        "content_hash",
        "kind",
        "storage_uri",
        "file_count",
        "total_bytes",
        "tabular",
        "record_count",
        "schema_hash",
        "created_at",
        "created_by",
        "message",
        "source_url",
        "source_version",
        "notes",
    )
)
_VERSION = frozenset(
    (
        "project",
        "model",
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
)
_RUN = frozenset(
    (
        "id",
        "project",
        "name",
        "status",
        "parent_id",
        "user",
        "host",
        "started_at",
        "ended_at",
        "exit_code",
        "error",
        "seed",
        "inputs",
        "capture",
        "deleted_at",
    )
)
_PARTS = {
    "params": frozenset(("run_id", "key", "value", "text", "num")),
    "tags": frozenset(("run_id", "key", "text", "num")),
    "metrics": frozenset(("run_id", "key", "step", "ts_ms", "value", "kind")),
    "latest": frozenset(("run_id", "key", "step", "value", "kind")),
    "artifacts": frozenset(("run_id", "name", "role", "kind", "digest", "size", "path", "created_at")),
}


class _Malformed(Exception):
    pass


# -- encoding ----------------------------------------------------------------------------------------
def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$f": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    return value


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _value(value) for key, value in row.items()}


def encode_record(record: Record, *, history: bool = True) -> dict[str, Any]:
    """``history=False`` leaves out a run's params, tags and metrics (where a record would land does
    not depend on them): a small body for ``/transfer/decide``."""
    kept = ("artifacts",) if not history else tuple(record.parts)
    return {
        "kind": record.kind,
        "row": _row(record.row),
        "refs": [[digest.hex, kind] for digest, kind in record.refs],
        "parts": {part: [_row(r) for r in rows] if part in kept else [] for part, rows in record.parts.items()},
    }


def encode_records(records: Iterable[Record], *, history: bool = True) -> list[dict[str, Any]]:
    return [encode_record(record, history=history) for record in records]


# -- decoding ----------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$t"} and isinstance(value["$t"], str) and len(value["$t"]) <= 64:
            try:
                return datetime.fromisoformat(value["$t"])
            except ValueError:
                raise _Malformed("a time is not ISO-8601") from None
        if set(value) == {"$f"} and value["$f"] in ("NaN", "Infinity", "-Infinity"):
            return float(value["$f"].lower().replace("infinity", "inf"))
        raise _Malformed("a value is an object")
    if isinstance(value, list):
        raise _Malformed("a value is a list")
    return value


def _decode_row(raw: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Malformed(f"{what} is not an object")
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        raise _Malformed(f"{what} has an unknown field {str(unknown[0])[:40]!r}")
    return {key: _plain(value) for key, value in raw.items()}


def _refs(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        raise _Malformed("refs is not a list")
    out = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise _Malformed("an object reference is not [digest, kind]")
        out.append((pair[0], pair[1]))
    return out


def _decode_one(raw: Any, where: str) -> Record:
    if not isinstance(raw, dict):
        raise _Malformed("a record is not an object")
    kind = raw.get("kind")
    if kind == "snapshot":
        row = _decode_row(raw.get("row"), _SNAPSHOT, "a snapshot row")
        ref = f"data:{row.get('name')}@v{row.get('version')}"
        record = check_snapshot(row, ref=ref, where=where)
    elif kind == "version":
        row = _decode_row(raw.get("row"), _VERSION, "a version row")
        project, model = row.pop("project", None), row.pop("model", None)
        ref = f"{project}/{model}@{row.get('version')}"
        if not isinstance(project, str) or not isinstance(model, str):
            raise _Malformed("a version names no project or model")
        try:
            validate_name(project, what="project")
            validate_name(model, what="model name")
        except LabvaultError as exc:
            raise _Malformed(exc.message) from None
        record = check_version(row, ref=ref, where=where)
        record.row["project"], record.row["model"] = project, model
    elif kind == "run":
        run = _decode_row(raw.get("row"), _RUN, "a run row")
        parts = raw.get("parts")
        if not isinstance(parts, dict) or set(parts) != set(_PARTS):
            raise _Malformed("a run's parts are not params, tags, metrics, latest and artifacts")
        doc: dict[str, Any] = {"run": run}
        for part, allowed in _PARTS.items():
            rows = parts[part]
            if not isinstance(rows, list):
                raise _Malformed(f"a run's {part} is not a list")
            doc[part] = [_decode_row(r, allowed, f"a {part} row") for r in rows]
        run_id = run.get("id")
        if not isinstance(run_id, str):
            raise _Malformed("a run has no id")
        record = check_run(doc, _refs(raw.get("refs")), run_id=run_id, where=where)
    else:
        raise _Malformed(f"unknown record kind {str(kind)[:20]!r}")
    if kind != "run" and _refs(raw.get("refs")) != [(d.hex, k) for d, k in record.refs]:
        raise _Malformed(f"{record.ref} points at other objects than its row names")
    return record


def decode_records(raw: Any, *, where: str) -> list[Record]:
    """The records of a transfer, checked as a local pull checks a remote's rows; IntegrityError
    (exit 5) naming ``where`` for anything malformed or crafted."""
    if not isinstance(raw, list) or len(raw) > MAX_RECORDS:
        raise IntegrityError(f"the records from {where} are not a list of at most {MAX_RECORDS}", hint=_HINT)
    out = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        try:
            record = _decode_one(item, where)
        except (_Malformed, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise IntegrityError(f"record {index} from {where} is malformed: {exc}", hint=_HINT) from None
        if record.ref in seen:
            raise IntegrityError(f"{record.ref} comes twice from {where}", hint=_HINT)
        seen.add(record.ref)
        out.append(record)
    return out


_HINT = "the other side's records are damaged or crafted; nothing was written"
