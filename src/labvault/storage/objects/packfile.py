"""The pack file format, and rebuilding the index rows from pack files.

A pack (see ``packs.py`` and docs/design/storage-format.md)::

    b"LVPACK2\\n", then records: b"LVOB" | sha256 (32 bytes) | size (u64 LE) | bytes

Records are self-describing, so the packs alone are enough to rebuild the index.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "PACK_MAGIC",
    "RECORD_MAGIC",
    "fsync_dir",
    "lock_pack",
    "recover",
    "recover_all",
    "transaction",
]

PACK_MAGIC = b"LVPACK2\n"
RECORD_MAGIC = b"LVOB"
HEADER = struct.Struct("<4s32sQ")  # magic, sha256, size
HEADER_SIZE = HEADER.size


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on the index (the connection is in autocommit mode otherwise)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def recover_all(conn: sqlite3.Connection, packs_dir: Path) -> list[str]:
    """Index what the packs hold past the index, skipping packs in use; returns the packs found gone.

    See ``packs.py``: a pack's records past its ``indexed_end`` (a batch killed between its
    ``fdatasync`` and its index commit, or a commit lost with the power) and packs the index does
    not list are indexed; a pack the index lists whose file is gone is dropped from it.
    """
    lost: list[str] = []
    indexed = {
        str(name): (int(pack), int(end)) for pack, name, end in conn.execute("SELECT id, name, indexed_end FROM packs")
    }
    for name, (gone, _) in indexed.items():
        if not (packs_dir / name).exists():  # deleted behind our back: what it held is gone
            with transaction(conn):
                held = conn.execute("DELETE FROM objects WHERE pack = ?", (gone,)).rowcount
                conn.execute("DELETE FROM packs WHERE id = ?", (gone,))
            if held:  # a pack created just before a crash, its folder entry never durable, held nothing
                lost.append(name)
    try:
        names = [n for n in os.listdir(packs_dir) if n.startswith("pack-") and n.endswith(".pack")]
    except FileNotFoundError:
        return lost
    for name in names:
        path = packs_dir / name
        pack: int | None
        pack, end = indexed.get(name, (None, 0))
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            continue
        if pack is not None and size <= end:
            continue
        fd = lock_pack(path)
        if fd is None:  # its writer is alive and indexes its own records
            continue
        try:
            if pack is None and os.pread(fd, len(PACK_MAGIC), 0) != PACK_MAGIC:
                continue  # not a pack (or not even its header made it to disk): never ours to index
            if pack is None:
                conn.execute("INSERT OR IGNORE INTO packs (name, indexed_end) VALUES (?, 0)", (name,))
                pack = int(conn.execute("SELECT id FROM packs WHERE name = ?", (name,)).fetchone()[0])
            recover(conn, pack, fd)
        finally:
            os.close(fd)
    return lost


def recover(conn: sqlite3.Connection, pack: int, fd: int) -> int | None:
    """Index the records of a locked pack past its ``indexed_end``; returns its valid end."""
    row = conn.execute("SELECT indexed_end FROM packs WHERE id = ?", (pack,)).fetchone()
    if row is None:
        return None
    size = os.fstat(fd).st_size
    end = max(int(row[0]), len(PACK_MAGIC))
    if size <= end:
        return end if size == end else None
    if os.pread(fd, len(PACK_MAGIC), 0) != PACK_MAGIC:
        return None  # not a pack: leave it for fsck to report
    found: list[tuple[bytes, int, int, int, float]] = []
    now = time.time()
    while end + HEADER_SIZE <= size:
        magic, digest, length = HEADER.unpack(os.pread(fd, HEADER_SIZE, end))
        if magic != RECORD_MAGIC or end + HEADER_SIZE + length > size:
            break
        data = os.pread(fd, length, end + HEADER_SIZE)
        if hashlib.sha256(data).digest() != digest:
            break
        found.append((digest, pack, end + HEADER_SIZE, length, now))
        end += HEADER_SIZE + length
    if end < size:
        os.ftruncate(fd, end)  # a torn record: its batch never committed
        os.fdatasync(fd)
    with transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO objects (digest, pack, offset, size, mtime) VALUES (?, ?, ?, ?, ?)", found
        )
        conn.execute("UPDATE packs SET indexed_end = ? WHERE id = ?", (end, pack))
    return end


def lock_pack(path: Path) -> int | None:
    """An fd holding the pack's exclusive flock, or None if another writer holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
