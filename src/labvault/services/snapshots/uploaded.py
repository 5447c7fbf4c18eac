"""A snapshot made of objects already stored (uploaded to the team server): a file list in, a tree out.

The client names each file by a relative path and the digest of an object it uploaded, each link by
its path and target, and its empty folders; nothing is read from a path, and a link is only text
(never followed, as ``data add`` records one). Paths are checked like tree entries (no ``..``, no
absolute path, no empty or NUL component, no backslash), every digest must be stored, and tabular
files are profiled from their objects, so the snapshot is the same as ``data add`` of the same
files, links and folders would make.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from labvault.errors import NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.snapshots.build import Built, put_folders
from labvault.services.snapshots.flat import FlatTree
from labvault.services.snapshots.tabular import is_tabular_name, profile_stream
from labvault.storage.contained_paths import check_name
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["MAX_FILES", "MAX_TARGET", "build_from_objects", "check_link_target", "check_rel_path"]

MAX_FILES = 1_000_000
#: The longest link target (Linux's PATH_MAX, which holds every target a folder can have).
MAX_TARGET = 4096


def check_rel_path(rel: str) -> list[str]:
    """The components of a relative file path a client sent, or ValidationError."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096 or "\\" in rel or rel.startswith("/"):
        raise ValidationError(f"invalid file path {str(rel)[:200]!r}", hint="give relative paths such as a/b.csv")
    try:
        rel.encode("utf-8")  # a lone surrogate from JSON: trees hold UTF-8
    except UnicodeEncodeError:
        raise ValidationError("invalid file path: not UTF-8", hint="give relative paths such as a/b.csv") from None
    parts = rel.split("/")
    for part in parts:
        why = check_name(part)
        if why is not None or len(part) > 255 or any(ord(c) < 32 for c in part):
            raise ValidationError(
                f"invalid file path {rel[:200]!r}: {why or 'a bad name'}", hint="give relative paths such as a/b.csv"
            )
    return parts


def check_link_target(rel: str, target: str) -> str:
    """A link's target as a client sent it: recorded as text and never followed, like a link that
    ``data add`` finds in a folder; it must be what a tree can hold (non-empty UTF-8, no NUL)."""
    ok = isinstance(target, str) and 0 < len(target) <= MAX_TARGET and "\0" not in target
    try:
        ok = ok and bool(target.encode("utf-8"))
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise ValidationError(
            f"link {rel[:200]!r} has an invalid target", hint="a link's target is non-empty UTF-8 text without NUL"
        )
    return target


def build_from_objects(
    objects: ObjectStore,
    files: Mapping[str, Digest],
    links: Mapping[str, str] | None = None,
    dirs: Iterable[str] = (),
) -> Built:
    """Store the trees of a snapshot whose files are the stored objects ``files`` names, with
    ``links`` (path -> target) and the folders ``dirs`` (kept even when empty); call in a batch.

    The trees are those ``data add`` makes of a folder holding these files, links and folders."""
    links = dict(links or {})
    empty = list(dict.fromkeys(dirs))
    if len(files) + len(links) + len(empty) > MAX_FILES:
        count = len(files) + len(links) + len(empty)
        raise ValidationError(f"{count} files, links and folders; the limit is {MAX_FILES}", hint="split the dataset")
    seen: set[str] = set()
    folders: set[str] = set()
    for rel in (*files, *links, *empty):
        parts = check_rel_path(rel)
        if rel in seen:
            raise ValidationError(f"{rel[:200]!r} is given twice", hint="give each path once")
        seen.add(rel)
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    for rel, target in links.items():
        check_link_target(rel, target)
    folders.update(empty)
    clash = sorted(folders & (set(files) | set(links)))
    if clash:
        raise ValidationError(f"{clash[0][:200]!r} is both a folder and a file or link", hint="give each path once")
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
    flat_files = {rel: (s, n, p or None) for rel, (s, n, p) in results.items()}
    built.flat = FlatTree.from_files(flat_files, links, sorted(folders))
    built.root = put_folders(objects, children, links, folders)
    built.tabular.sort()
    built.notes.sort()
    return built
