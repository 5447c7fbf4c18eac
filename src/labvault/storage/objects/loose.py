"""Objects stored as files of their own (``objects/sha256/ab/cdef…``): committing a batch of them,
listing them. Larger objects live here; small ones go to packs (``packs.py``), and a format-1 vault
keeps every object here.

Every function raises plain ``OSError``; the store translates it once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from labvault.entities import ObjectInfo
from labvault.refs import Digest
from labvault.storage.objects.fileio import HAVE_SYNCFS, syncfs

__all__ = ["commit", "discard", "iter_objects", "with_prefix"]

_FEW = 8  # batches up to this many new objects fsync each one instead of syncing the filesystem


def commit(root: str, tmp_dir: str, pending: dict[str, str], durable: set[str], shards: set[str]) -> None:
    """Make a batch's temp files durable and rename them into place (``pending``: digest -> temp file).

    ``durable`` are digests whose bytes were flushed while they were written; ``shards`` caches
    the shard folders known to exist.
    """
    if not pending:
        return
    # A handful of objects: fsync each file and its folder, which waits for our writes only;
    # syncfs would also flush every other writer's dirty data on the filesystem. Many objects:
    # two syncfs calls, however many objects (never one fsync per small object).
    few = len(pending) <= _FEW or not HAVE_SYNCFS
    if few:  # the bytes first...
        for hexd, tmp in pending.items():
            if hexd not in durable:
                _fsync_path(tmp, os.O_RDONLY)
    else:
        syncfs(tmp_dir)
    new_shard = False
    for hexd, tmp in pending.items():
        new_shard |= _ensure_shard(root, hexd[:2], shards)
        os.replace(tmp, f"{root}/{hexd[:2]}/{hexd[2:]}")
    if few:  # ...then the names
        for shard in {h[:2] for h in pending}:
            _fsync_path(f"{root}/{shard}", os.O_RDONLY | os.O_DIRECTORY)
        if new_shard:
            _fsync_path(root, os.O_RDONLY | os.O_DIRECTORY)
    else:
        syncfs(root)


def discard(pending: dict[str, str]) -> None:
    for tmp in pending.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _ensure_shard(root: str, shard: str, existing: set[str]) -> bool:
    """Make the shard folder if needed; True if this call created it."""
    if shard in existing:
        return False
    try:
        os.mkdir(f"{root}/{shard}")
        created = True
    except FileExistsError:
        created = False
    existing.add(shard)
    return created


def iter_objects(root: Path) -> Iterator[ObjectInfo]:
    """Every object stored as a file, in digest order."""
    try:
        shards = sorted(e.name for e in os.scandir(root) if e.is_dir() and len(e.name) == 2)
    except FileNotFoundError:
        return
    for shard in shards:
        for entry in sorted(os.scandir(root / shard), key=lambda e: e.name):
            name = shard + entry.name
            if len(name) != 64:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # deleted while we listed (gc, quarantine)
                continue
            yield ObjectInfo(Digest(name), st.st_size, st.st_mtime)


def with_prefix(root: Path, prefix: str) -> set[str]:
    """Digests of objects stored as files that start with ``prefix`` (at least 2 hex digits)."""
    try:
        return {prefix[:2] + n for n in os.listdir(root / prefix[:2]) if n.startswith(prefix[2:])}
    except FileNotFoundError:
        return set()


def _fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
