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
      "format": "labvault.lock/2",
      "stages": {
        "train": {"cmd": "...", "deps": {"data/features": "sha256:…"}, "env": "sha256:…",
                  "key": "sha256:…", "outs": {"model.pkl": "sha256:…"}, "params": {"params.yaml:train.lr": 0.1}}
      }
    }

Format ``labvault.lock/2`` adds the pipeline's ``stages:`` (what each stage's last run read and
wrote); ``labvault.lock/1`` files (datasets only) are still read, and written back as ``/2``. Read
without the database: ``data status``, ``data checkout`` and a no-op ``pipeline run`` start from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from labvault.errors import ValidationError
from labvault.refs import DataRef, Digest, parse_ref
from labvault.safeload import load_json
from labvault.storage.contained import write_text
from labvault.storage.contained_paths import check_name
from labvault.storage.locks import file_lock

__all__ = ["LOCK_NAME", "LockEntry", "read_lock", "read_stages", "relative_key", "update_lock", "update_stages"]

LOCK_NAME = "labvault.lock"
_FORMAT = "labvault.lock/2"
_FORMATS = ("labvault.lock/1", _FORMAT)
_HINT = "restore it from git (`git checkout -- labvault.lock`)"
_STAGE_KEYS: dict[str, Any] = {
    "cmd": str,
    "deps": dict,
    "env": (str, type(None)),
    "key": str,
    "outs": dict,
    "params": dict,
}


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


def _read_doc(root: Path) -> dict[str, object] | None:
    path = root / LOCK_NAME
    try:
        doc = load_json(path, hint=_HINT)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict) or doc.get("format") not in _FORMATS:
        shown = doc.get("format") if isinstance(doc, dict) else None
        raise ValidationError(f"{path} is malformed: unknown format {shown!r}", hint=_HINT)
    return doc


def read_lock(root: Path) -> dict[str, LockEntry]:
    path = root / LOCK_NAME
    doc = _read_doc(root)
    if doc is None:
        return {}
    try:
        out = {}
        for key, raw in doc.get("datasets", {}).items():  # type: ignore[attr-defined]
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


def read_stages(root: Path) -> dict[str, dict[str, Any]]:
    """The ``stages:`` section: stage name -> what its last run read and wrote (validated)."""
    doc = _read_doc(root)
    if doc is None:
        return {}
    stages = doc.get("stages", {})
    path = root / LOCK_NAME
    if not isinstance(stages, dict):
        raise ValidationError(f"{path} is malformed: stages is not a mapping", hint=_HINT)
    for name, entry in stages.items():
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in _STAGE_KEYS.items()):
            raise ValidationError(f"{path} is malformed: the entry of stage {name!r} is incomplete", hint=_HINT)
        trees = entry.get("trees", [])
        if not isinstance(trees, list) or not all(isinstance(t, str) for t in trees):
            raise ValidationError(f"{path} is malformed: stage {name!r}: trees is not a list of paths", hint=_HINT)
        if not isinstance(entry.get("wdir", "."), str):
            raise ValidationError(f"{path} is malformed: stage {name!r}: wdir is not a path", hint=_HINT)
        for section in ("deps", "outs"):
            for key, value in entry[section].items():
                if not key.startswith("data:"):
                    try:
                        _check_key(key)
                    except ValueError as exc:
                        raise ValidationError(f"{path} is malformed: stage {name!r}: {exc}", hint=_HINT) from None
                if value is not None and not _is_digest(value):
                    raise ValidationError(f"{path} is malformed: stage {name!r}: {key} has no hash", hint=_HINT)
    return stages


def _is_digest(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith("sha256:"):
        return False
    try:
        Digest(value.removeprefix("sha256:"))
    except ValidationError:
        return False
    return True


def _write(root: Path, entries: dict[str, LockEntry], stages: dict[str, Any]) -> None:
    doc: dict[str, Any] = {
        "datasets": {
            k: {"content_hash": str(e.content_hash), "kind": e.kind, "ref": str(e.ref)}
            for k, e in sorted(entries.items())
        },
        "format": _FORMAT,
    }
    if stages:
        doc["stages"] = dict(sorted(stages.items()))
    write_text(root / LOCK_NAME, json.dumps(doc, indent=2, sort_keys=True) + "\n", durable=True)


def update_lock(root: Path, vault_dir: Path, entry: LockEntry) -> None:
    """Set one path's entry, atomically and under a lock (concurrent adds do not lose entries)."""
    (vault_dir / "locks").mkdir(parents=True, exist_ok=True)
    with file_lock(vault_dir / "locks" / "lockfile.lock", timeout=60, what=LOCK_NAME):
        entries = read_lock(root)
        entries[entry.path] = entry
        _write(root, entries, read_stages(root))


def update_stages(root: Path, vault_dir: Path, changes: dict[str, dict[str, Any] | None]) -> None:
    """Set (or, for None, remove) stage entries, atomically and under the same lock as datasets."""
    (vault_dir / "locks").mkdir(parents=True, exist_ok=True)
    with file_lock(vault_dir / "locks" / "lockfile.lock", timeout=60, what=LOCK_NAME):
        stages = read_stages(root)
        for name, entry in changes.items():
            if entry is None:
                stages.pop(name, None)
            else:
                stages[name] = entry
        _write(root, read_lock(root), stages)
