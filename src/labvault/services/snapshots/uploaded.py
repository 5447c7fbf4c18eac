"""A snapshot made of objects already stored (uploaded to the team server): a file list in, a tree out.

The client names each file by a relative path and the digest of an object it uploaded; nothing is
read from a path. Paths are checked like tree entries (no ``..``, no absolute path, no empty or NUL
component, no backslash), every digest must be stored, and tabular files are profiled from their
objects, so the snapshot is the same as ``data add`` of the same files would make.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from labvault.errors import NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.snapshots.build import Built
from labvault.services.snapshots.flat import FlatTree
from labvault.services.snapshots.tabular import is_tabular_name, profile_stream
from labvault.storage.contained import check_name
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import encode_scanned

__all__ = ["MAX_FILES", "build_from_objects", "check_rel_path"]

MAX_FILES = 1_000_000


def check_rel_path(rel: str) -> list[str]:
    """The components of a relative file path a client sent, or ValidationError."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096 or "\\" in rel or rel.startswith("/"):
        raise ValidationError(f"invalid file path {str(rel)[:200]!r}", hint="give relative paths such as a/b.csv")
    parts = rel.split("/")
    for part in parts:
        why = check_name(part)
        if why is not None or len(part) > 255 or any(ord(c) < 32 for c in part):
            raise ValidationError(
                f"invalid file path {rel[:200]!r}: {why or 'a bad name'}", hint="give relative paths such as a/b.csv"
            )
    return parts


def build_from_objects(objects: ObjectStore, files: Mapping[str, Digest]) -> Built:
    """Store the trees of a snapshot whose files are the stored objects ``files`` names (call in a batch)."""
    if not files:
        raise ValidationError("a snapshot needs at least one file", hint="list the files and their digests")
    if len(files) > MAX_FILES:
        raise ValidationError(f"{len(files)} files; the limit is {MAX_FILES}", hint="split the dataset")
    dirs: set[str] = set()
    for rel in files:
        parts = check_rel_path(rel)
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(dirs & set(files))
    if clash:
        raise ValidationError(f"{clash[0]!r} is both a file and a folder", hint="give each path once")
    results: dict[str, tuple[str, int, Any]] = {}
    for rel, digest in sorted(files.items()):
        if not objects.has(digest):
            raise NotFound(f"{rel}: no object {digest}", hint="upload it first: PUT /api/v1/objects/{digest}")
        objects.touch(digest)  # gc keeps it from now until the snapshot refers to it
        size = objects.info(digest).size
        name = rel.rsplit("/", 1)[-1]
        profile = None
        if is_tabular_name(name):
            with objects.open(digest, verify=True) as raw:
                profile = profile_stream(name, raw)
        results[rel] = (digest.hex, size, profile)
    built = Built(root=Digest("0" * 64), hashed=len(results), file_count=len(results))
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rel, (sha, size, profile) in results.items():
        parent, _, name = rel.rpartition("/")
        entry: dict[str, Any] = {"name": name, "type": "file", "sha256": sha, "size": size}
        if profile:
            entry = {**profile, **entry}
            if profile.get("record_count") is not None:
                built.tabular.append((rel, profile["record_count"], profile.get("schema") or []))
            if profile.get("note"):
                built.notes.append(f"{rel}: {profile['note']}")
        children[parent].append(entry)
        built.total_bytes += size
    built.flat = FlatTree.from_files({rel: (s, n, p or None) for rel, (s, n, p) in results.items()}, {}, sorted(dirs))
    # Folders deepest first, so every subtree digest exists before its parent is encoded.
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        entries = children.pop(d, [])
        digest = objects.put_bytes(encode_scanned(entries))
        parent, _, name = d.rpartition("/")
        children[parent].append(
            {"name": name, "type": "dir", "sha256": digest.hex, "size": sum(e.get("size", 0) for e in entries)}
        )
    built.root = objects.put_bytes(encode_scanned(children.pop("", [])))
    built.tabular.sort()
    built.notes.sort()
    return built
