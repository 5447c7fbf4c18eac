"""``labvault.lock``: which snapshot each dataset path is at, kept in git beside the code.

Plain JSON, keys sorted, one field a line, so that it diffs and merges well::

    {
      "datasets": {
        "data/raw": {
          "content_hash": "sha256:…",
          "kind": "dir",
          "ref": "data:raw@v3"
        }
      },
      "format": "labvault.lock/1"
    }

Read without the database: ``data status`` and ``data checkout`` start from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from labvault.errors import ValidationError
from labvault.refs import DataRef, Digest, parse_ref
from labvault.safeload import load_json
from labvault.storage.contained import check_name, write_text
from labvault.storage.locks import file_lock

__all__ = ["LOCK_NAME", "LockEntry", "read_lock", "relative_key", "update_lock"]

LOCK_NAME = "labvault.lock"
_FORMAT = "labvault.lock/1"


@dataclass(frozen=True, slots=True)
class LockEntry:
    path: str  # posix, relative to the project root
    ref: DataRef
    content_hash: Digest
    kind: str  # file | dir


def relative_key(root: Path, path: Path) -> str:
    """``path`` relative to the project root, posix form; refuses paths outside the project."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        raise ValidationError(
            f"{path} is outside the project {root}",
            hint="keep datasets inside the project folder, or use `labvault data import` for outside data",
        ) from None
    return PurePosixPath(*rel.parts).as_posix() if rel.parts else "."


def read_lock(root: Path) -> dict[str, LockEntry]:
    path = root / LOCK_NAME
    try:
        doc = load_json(path, hint="restore it from git (`git checkout -- labvault.lock`)")
    except FileNotFoundError:
        return {}
    try:
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        out = {}
        for key, raw in doc["datasets"].items():
            ref = parse_ref(raw["ref"], expect=DataRef)
            _check_key(key)
            if not isinstance(ref, DataRef) or ref.version is None:
                raise ValueError(f"bad entry {key!r}")
            out[key] = LockEntry(key, ref, Digest(raw["content_hash"].removeprefix("sha256:")), raw["kind"])
        return out
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        msg = exc.message if isinstance(exc, ValidationError) else str(exc)
        raise ValidationError(
            f"{path} is malformed: {msg}", hint="restore it from git (`git checkout -- labvault.lock`)"
        ) from exc


def _check_key(key: str) -> None:
    """A key is a relative path inside the project: no absolute path, no ``..``, ``.`` or empty part."""
    if not isinstance(key, str):
        raise ValueError("a key is not a string")
    if key == ".":
        return  # the project root itself
    if key.startswith("/"):
        raise ValueError(f"the key {key!r} is an absolute path; keys are relative paths inside the project")
    for part in key.split("/"):
        why = check_name(part)
        if why is not None:
            raise ValueError(f"the key {key!r} holds {why}; keys are relative paths inside the project")


def update_lock(root: Path, vault_dir: Path, entry: LockEntry) -> None:
    """Set one path's entry, atomically and under a lock (concurrent adds do not lose entries)."""
    (vault_dir / "locks").mkdir(parents=True, exist_ok=True)
    with file_lock(vault_dir / "locks" / "lockfile.lock", timeout=60, what=LOCK_NAME):
        entries = read_lock(root)
        entries[entry.path] = entry
        doc = {
            "datasets": {
                k: {"content_hash": str(e.content_hash), "kind": e.kind, "ref": str(e.ref)}
                for k, e in sorted(entries.items())
            },
            "format": _FORMAT,
        }
        write_text(root / LOCK_NAME, json.dumps(doc, indent=2, sort_keys=True) + "\n", durable=True)
