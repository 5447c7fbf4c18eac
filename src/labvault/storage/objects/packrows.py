"""Checking the pack index's rows against the packs, and re-deriving the rows that are wrong.

The index is a cache of what the packs hold (``packs.py``): a row is *right* when the record header at
its offset names its digest and size, or when the bytes it points at hash to its digest (a record whose
framing alone is damaged). A read checks the header at no extra cost (one ``pread`` of header and
bytes); a row that is not right means the index is wrong, not the object, and :func:`repair_rows`
re-derives that pack's rows from the pack itself (docs/design/storage-format.md, *Packs*).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import sqlite3
from pathlib import Path

from labvault.storage.objects.packfile import HEADER, HEADER_SIZE, PACK_MAGIC, RECORD_MAGIC, scan, transaction

__all__ = ["repair_rows"]

Location = tuple[int, int, int]  # pack, offset of the bytes, size
_FEW = 16  # up to this many digests to find, each is looked for by its marker; more, by a full scan


def repair_rows(conn: sqlite3.Connection, packs_dir: Path, pack: int) -> set[bytes]:
    """Check every index row that points into ``pack`` against the pack; fix or drop the wrong ones.

    A wrong row is moved to where a sound record of its digest is (in this pack, else in another),
    dropped when a sound record of another digest is where it points (a mangled copy of that
    record's row), else dropped and recorded as damage claiming its digest, so that ``fsck``
    reports the object as corrupt: the returned digests. A sound record a wrong row points at that no
    row names (the record a mangled row belonged to) is indexed again, as of the pack's last write.
    Other records no row names are left alone: they are what gc deleted.
    """
    # As stored: a value of another type than the schema's (an index written elsewhere) is a wrong row,
    # matched by that very value when it is moved or dropped.
    rows = [
        (bytes(d), o, s) for d, o, s in conn.execute("SELECT digest, offset, size FROM objects WHERE pack = ?", (pack,))
    ]
    found = conn.execute("SELECT name, indexed_end FROM packs WHERE id = ?", (pack,)).fetchone()
    sound: dict[bytes, tuple[int, int]] = {}
    named: dict[int, tuple[bytes, int]] = {}  # offset -> what the record header there names
    written = 0.0
    if found is not None:
        scanned = _records(packs_dir / str(found[0]), int(found[1]))
        if scanned is None:  # the pack file is gone: a lost pack, which fsck reports, not wrong rows
            return set()
        sound, named, written = scanned
    wrong = [(d, o, s) for d, o, s in rows if sound.get(d) != (o, s) and named.get(o) != (d, s)]
    if not wrong:
        return set()
    elsewhere = _find(conn, packs_dir, pack, {d for d, _, _ in wrong if d not in sound})
    lost: set[bytes] = set()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM packs WHERE id = ?", (pack,)).fetchone() is None:
            found = None  # compacted away meanwhile: its rows are elsewhere now
        for digest, offset, size in wrong:
            current = "digest = ? AND pack = ? AND offset = ? AND size = ?"  # unless changed meanwhile
            key = (digest, pack, offset, size)
            if digest in sound:
                conn.execute(f"UPDATE objects SET offset = ?, size = ? WHERE {current}", (*sound[digest], *key))
            elif digest in elsewhere:
                conn.execute(
                    f"UPDATE objects SET pack = ?, offset = ?, size = ? WHERE {current}", (*elsewhere[digest], *key)
                )
            elif conn.execute(f"DELETE FROM objects WHERE {current}", key).rowcount and offset not in named:
                lost.add(digest)
                conn.execute(
                    "INSERT OR IGNORE INTO damage (pack, start, stop, claimed) VALUES (?, ?, ?, ?)",
                    (pack, *_span(offset, size), digest),
                )
        if found is not None:  # the records the wrong rows point at, when no row names them (a mangled digest)
            owners = {named[o][0] for _, o, _ in wrong if o in named and sound.get(named[o][0]) == (o, named[o][1])}
            conn.executemany(
                "INSERT OR IGNORE INTO objects (digest, pack, offset, size, mtime) VALUES (?, ?, ?, ?, ?)",
                [(d, pack, *sound[d], written) for d in owners],
            )
    return lost


def _span(offset: object, size: object) -> tuple[int, int]:
    """The pack bytes a damaged row claimed (none when its offset or size is not even a number)."""
    if type(offset) is int and type(size) is int:
        return offset - HEADER_SIZE, offset + size
    return 0, 0


def _records(path: Path, end: int) -> tuple[dict[bytes, tuple[int, int]], dict[int, tuple[bytes, int]], float] | None:
    """The sound records of a pack up to ``end`` (digest -> offset, size), what each header names, its mtime."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        stop = min(st.st_size, end)  # past indexed_end: a live writer's batch, not indexed yet
        if stop <= len(PACK_MAGIC):
            return {}, {}, st.st_mtime
        with mmap.mmap(fd, stop, access=mmap.ACCESS_READ) as view:
            records, damage = scan(view, len(PACK_MAGIC), stop)
        records += [d.salvaged for d in damage if d.salvaged is not None]
        sound = {digest: (offset, size) for digest, offset, size in records}
        named = {offset: (digest, size) for digest, offset, size in records}
        for d in damage:
            if d.claimed is not None:  # intact framing, bytes that do not hash: a corrupt object, not a wrong row
                named[d.start + HEADER_SIZE] = (d.claimed, d.stop - d.start - HEADER_SIZE)
        return sound, named, st.st_mtime
    finally:
        os.close(fd)


def _find(conn: sqlite3.Connection, packs_dir: Path, skip: int, wanted: set[bytes]) -> dict[bytes, Location]:
    """Sound records of ``wanted`` digests in packs other than ``skip`` (rows whose pack is wrong).

    A few digests are looked for by their record marker; many (a pack id damaged in a whole page of
    rows) by one scan of each pack, so the cost stays one read of the store at most.
    """
    out: dict[bytes, Location] = {}
    packs = conn.execute("SELECT id, name, indexed_end FROM packs WHERE id != ?", (skip,)).fetchall() if wanted else []
    for pack, name, end in packs:
        if not wanted - out.keys():
            break
        try:
            fd = os.open(packs_dir / str(name), os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            stop = min(os.fstat(fd).st_size, int(end))
            if stop <= len(PACK_MAGIC):
                continue
            with mmap.mmap(fd, stop, access=mmap.ACCESS_READ) as view:
                if len(wanted) > _FEW:
                    records, damage = scan(view, len(PACK_MAGIC), stop)
                    records += [d.salvaged for d in damage if d.salvaged is not None]
                    out |= {d: (int(pack), o, n) for d, o, n in records if d in wanted and d not in out}
                    continue
                for digest in wanted - out.keys():
                    if (at := _marker(view, digest, stop)) is not None:
                        out[digest] = (int(pack), *at)
        finally:
            os.close(fd)
    return out


def _marker(view: mmap.mmap, digest: bytes, stop: int) -> tuple[int, int] | None:
    """``(offset, size)`` of a sound record of ``digest``, found by its marker."""
    marker = RECORD_MAGIC + digest
    at = view.find(marker, len(PACK_MAGIC))
    while at >= 0:
        size = HEADER.unpack_from(view, at)[2] if at + HEADER_SIZE <= stop else -1
        body = at + HEADER_SIZE
        if 0 <= size <= stop - body and hashlib.sha256(view[body : body + size]).digest() == digest:
            return body, size
        at = view.find(marker, at + 1)
    return None
