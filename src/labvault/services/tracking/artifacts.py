"""Storing what a run logs: a file as a blob, a folder as a tree of per-directory manifests."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from labvault.entities import Artifact
from labvault.errors import Conflict, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import TreeEntry, decode_tree, iter_reachable, put_tree

__all__ = ["artifact_name", "store_path", "stored_tree_size"]

_MAX_NAME = 512


def artifact_name(name: str) -> str:
    """An artifact name is a relative path inside the run: no ``..``, no absolute paths."""
    clean = name.replace("\\", "/").strip()
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or clean.startswith("/") or len(clean) > _MAX_NAME or any(ord(c) < 32 for c in clean):
        raise ValidationError(
            f"invalid artifact name {name!r}",
            hint="name artifacts with a relative path such as model.pt or plots/roc.png",
        )
    return "/".join(parts)


def _store_dir(store: ObjectStore, folder: Path) -> tuple[Digest, int]:
    entries: list[TreeEntry] = []
    total = 0
    with os.scandir(folder) as it:
        for item in sorted(it, key=lambda e: e.name):
            path = Path(item.path)
            mode = item.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                entries.append(TreeEntry(item.name, "link", target=os.readlink(path)))
            elif stat.S_ISDIR(mode):
                digest, size = _store_dir(store, path)
                entries.append(TreeEntry(item.name, "dir", digest, size))
                total += size
            elif stat.S_ISREG(mode):
                digest, size = _put_checked(store, path)
                entries.append(TreeEntry(item.name, "file", digest, size))
                total += size
            # sockets, fifos and devices are not content: skipped
    return put_tree(store, entries), total


def store_path(store: ObjectStore, source: Path, *, name: str, role_path: str | None = None) -> Artifact:
    """Store ``source`` (file or folder) in one batch; durable when this returns."""
    if not source.exists():
        raise ValidationError(f"{source} does not exist", hint="give the path of a file or folder to store")
    with store.batch():
        if source.is_dir():
            digest, size = _store_dir(store, source)
            return Artifact(name, digest, "tree", size, role_path or str(source))
        if not source.is_file():
            raise ValidationError(f"{source} is not a regular file or folder", hint="log files and folders")
        digest, size = _put_checked(store, source)
        return Artifact(name, digest, "file", size, role_path or str(source))


def _put_checked(store: ObjectStore, path: Path) -> tuple[Digest, int]:
    """Store a file with the size of the bytes stored: its stat before and after the copy must agree."""
    before = os.stat(path)
    digest = store.put_file(path)
    after = os.stat(path)
    if (before.st_ino, before.st_size, before.st_mtime_ns) != (after.st_ino, after.st_size, after.st_mtime_ns):
        raise Conflict(
            f"{path} changed while it was being stored",
            hint="log it once whatever is writing it has finished",
        )
    return digest, after.st_size


def stored_tree_size(store: ObjectStore, digest: Digest) -> int:
    """The bytes below a folder artifact sent by a client, once every object it reaches is stored
    (objects first: a record never points at a missing file); NotFound names one that is not."""
    missing = [d for d in iter_reachable(store, digest, missing=[]) if not store.has(d)]
    if missing:
        raise NotFound(
            f"no object {missing[0]} (in the folder {digest})", hint="upload every object of the folder first"
        )
    return sum(e.size for e in decode_tree(store.get_bytes(digest, verify=True), digest=digest))
