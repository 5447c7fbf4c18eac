"""Tree objects: one canonical JSON manifest per directory, a Merkle tree over the byte store.

A tree object is stored like any other object; its name is the sha256 of its canonical bytes, so
an unchanged subtree has the same digest in every snapshot and is stored once::

    {"entries":[{"name":"a.csv","sha256":"<hex>","size":12,"type":"file"},
                {"name":"sub","sha256":"<hex of a tree>","size":4096,"type":"dir"},
                {"name":"latest","target":"a.csv","type":"link"}],
     "format":"labvault.tree/1"}

Entries are sorted by name; keys are sorted; no whitespace. A name is one path component: never
empty, ``.`` or ``..``, never holding ``/`` or NUL; :func:`decode_tree` refuses a tree that breaks
this (it is corrupt, exit 5), since a tree may come from elsewhere. Entries may carry extra keys (for
example ``record_count``); the walkers below only read ``type`` and ``sha256``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from labvault.errors import IntegrityError, ValidationError
from labvault.refs import Digest
from labvault.storage.contained_paths import check_name
from labvault.storage.objects.protocol import ObjectStore

__all__ = [
    "TREE_FORMAT",
    "TreeEntry",
    "decode_tree",
    "encode_scanned",
    "encode_tree",
    "entry_digest",
    "iter_reachable",
    "put_tree",
]

TREE_FORMAT = "labvault.tree/1"
EntryType = Literal["file", "dir", "link"]


@dataclass(frozen=True, slots=True)
class TreeEntry:
    name: str
    type: EntryType
    digest: Digest | None = None  # file bytes or subtree; None for links
    size: int = 0  # file size, or total bytes below a dir
    target: str | None = None  # links only
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {**self.extra, "name": self.name, "type": self.type}
        if self.type == "link":
            doc["target"] = self.target
        else:
            doc["sha256"] = self.digest.hex if self.digest else None
            doc["size"] = self.size
        return doc


def encode_tree(entries: Iterable[TreeEntry]) -> bytes:
    ordered = sorted(entries, key=lambda e: e.name)
    names = [e.name for e in ordered]
    if len(set(names)) != len(names):
        raise ValidationError("a tree cannot hold two entries with the same name")
    for e in ordered:
        why = check_name(e.name)
        if why is not None:
            raise ValidationError(f"invalid tree entry: {why}")
    doc = {"format": TREE_FORMAT, "entries": [e.to_json() for e in ordered]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_digest(entry: TreeEntry) -> Digest:
    """A file or folder entry's digest (``decode_tree`` gives each one; a link has none)."""
    if entry.digest is None:
        raise IntegrityError(f"tree entry {entry.name!r} ({entry.type}) has no digest")
    return entry.digest


def decode_tree(data: bytes, *, digest: Digest | None = None) -> list[TreeEntry]:
    where = f" {digest}" if digest else ""
    try:
        doc = json.loads(data)
        if doc.get("format") != TREE_FORMAT:
            raise ValueError("unknown format")
        out = []
        names: set[str] = set()
        for raw in doc["entries"]:
            name = raw["name"]
            why = check_name(name) if isinstance(name, str) else "a name that is not a string"
            if why is not None:
                raise ValueError(f"an entry has {why}")
            if name in names:
                raise ValueError(f"two entries are named {name!r}")
            names.add(name)
            kind = raw["type"]
            extra = {k: v for k, v in raw.items() if k not in ("name", "type", "sha256", "size", "target")}
            if kind == "link":
                target = raw["target"]
                if not isinstance(target, str) or not target or "\0" in target:
                    raise ValueError(f"link {name!r} has an invalid target")
                out.append(TreeEntry(name, "link", target=target, extra=extra))
            elif kind in ("file", "dir"):
                size = raw["size"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ValueError(f"entry {name!r} has an invalid size {size!r}")
                out.append(TreeEntry(name, kind, Digest(raw["sha256"]), size, extra=extra))
            else:
                raise ValueError(f"unknown entry type {kind!r}")
        return out
    # Not safeload: a tree of a large folder may exceed its 10 MiB, and a bad tree is corrupt (exit 5).
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise IntegrityError(f"tree object{where} is malformed: {exc}") from exc
    except RecursionError:
        raise IntegrityError(f"tree object{where} is malformed: nested too deep") from None
    except OverflowError:  # int() of a size written as Infinity
        raise IntegrityError(f"tree object{where} is malformed: a size is not a number") from None


def put_tree(store: ObjectStore, entries: Iterable[TreeEntry]) -> Digest:
    return store.put_bytes(encode_tree(entries))


def encode_scanned(entries: list[dict[str, Any]]) -> bytes:
    """:func:`encode_tree` for entries already in their JSON form, as a folder scan yields them.

    The names come from one directory listing, so they are valid and distinct by construction and
    are not checked again; the bytes are the same as ``encode_tree`` gives for the same entries.
    """
    entries.sort(key=_by_name)
    doc = {"format": TREE_FORMAT, "entries": entries}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _by_name(entry: dict[str, Any]) -> str:
    return str(entry["name"])


def iter_reachable(
    store: ObjectStore,
    root: Digest,
    *,
    missing: list[Digest] | None = None,
    unreadable: list[Digest] | None = None,
) -> Iterator[Digest]:
    """Every digest reachable from a tree (itself included), each once.

    With ``missing``, absent trees are appended there instead of raising; with ``unreadable``,
    trees that are corrupt or malformed are appended there and the walk goes on with the rest.
    """
    seen: set[str] = set()
    stack = [root]
    while stack:
        digest = stack.pop()
        if digest.hex in seen:
            continue
        seen.add(digest.hex)
        yield digest
        if not store.has(digest):
            if missing is None:
                raise IntegrityError(f"tree {digest} is missing from the object store")
            missing.append(digest)
            continue
        try:
            entries = decode_tree(store.get_bytes(digest, verify=True), digest=digest)
        except IntegrityError:
            if unreadable is None:
                raise
            unreadable.append(digest)
            continue
        for entry in entries:
            if entry.digest is None:
                continue
            if entry.type == "dir":
                stack.append(entry.digest)
            elif entry.digest.hex not in seen:
                seen.add(entry.digest.hex)
                yield entry.digest
