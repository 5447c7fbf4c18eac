"""The pack file format, scanning packs for sound records, and rebuilding the index rows from them.

A pack (see ``packs.py`` and docs/design/storage-format.md)::

    b"LVPACK2\\n", then records: b"LVOB" | sha256 (32 bytes) | size (u64 LE) | bytes

Records are self-describing, so the packs alone are enough to rebuild the index. A record is
*sound* when its magic is right, it ends inside the pack and its bytes hash to its digest. A scan
never gives up on a pack: past bytes that are not a sound record, it resyncs on the next record
marker whose record is sound (:func:`scan`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import secrets
import sqlite3
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "NEW_SUFFIX",
    "PACK_MAGIC",
    "RECORD_MAGIC",
    "Damage",
    "fsync_dir",
    "lock_pack",
    "quarantine_span",
    "recover",
    "recover_all",
    "scan",
    "transaction",
]

PACK_MAGIC = b"LVPACK2\n"
RECORD_MAGIC = b"LVOB"
HEADER = struct.Struct("<4s32sQ")  # magic, sha256, size
HEADER_SIZE = HEADER.size
NEW_SUFFIX = ".new"  # a pack being created, locked by its writer before it is renamed into view
_STALE_NEW = 3600.0  # a new pack no writer holds after this long was left by a killed writer

Record = tuple[bytes, int, int]  # digest, offset of its bytes, size


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[start, stop)`` of a pack that are not a sound record.

    ``claimed`` is the digest a record names when only its bytes are wrong (its framing is intact
    and no index row says otherwise); ``salvaged`` is the record when only its framing is wrong
    (the bytes up to the next sound record hash to the digest its header names).
    """

    start: int
    stop: int
    claimed: bytes | None = None
    salvaged: Record | None = None


def scan(
    view: mmap.mmap, start: int, stop: int, known: Mapping[int, tuple[bytes, int]] | None = None
) -> tuple[list[Record], list[Damage]]:
    """The sound records of ``view[start:stop]`` and the damaged spans between them.

    With ``known`` (fsck: the index rows of this pack, offset -> ``(digest, size)``), the walk reads
    framing only: a record whose header agrees with its index row, or that no row names (dead
    space, or a record quarantined already), is taken as it is, since fsck hashes indexed objects
    on its own. Resyncing after damage always hashes.
    """
    trust = known is not None
    known = known or {}
    records: list[Record] = []
    damage: list[Damage] = []
    pos = start
    while pos < stop:
        record = _sound_at(view, pos, stop, known, trust=trust)
        if record is not None:
            records.append(record)
            pos = record[1] + record[2]
            continue
        salvaged = _magic_damaged(view, pos, stop)
        if salvaged is not None:
            damage.append(Damage(pos, salvaged[1] + salvaged[2], salvaged=salvaged))
            pos = salvaged[1] + salvaged[2]
            continue
        nxt = pos + 1
        while (nxt := view.find(RECORD_MAGIC, nxt, stop)) >= 0 and _sound_at(view, nxt, stop, known) is None:
            nxt += 1
        end = stop if nxt < 0 else nxt
        damage.append(_damaged(view, pos, end, known))
        pos = end
    return records, damage


def _sound_at(
    view: mmap.mmap, pos: int, stop: int, known: Mapping[int, tuple[bytes, int]], *, trust: bool = False
) -> Record | None:
    if pos + HEADER_SIZE > stop:
        return None
    magic, digest, size = HEADER.unpack_from(view, pos)
    end = pos + HEADER_SIZE + size
    if magic != RECORD_MAGIC or end > stop:
        return None
    row = known.get(pos + HEADER_SIZE)
    if row == (digest, size) or (trust and row is None):
        return digest, pos + HEADER_SIZE, size
    if hashlib.sha256(view[pos + HEADER_SIZE : end]).digest() != digest:
        return None
    return digest, pos + HEADER_SIZE, size


def _magic_damaged(view: mmap.mmap, pos: int, stop: int) -> Record | None:
    """The record at ``pos`` if only its magic is damaged (its size fits and its bytes hash to its digest)."""
    if pos + HEADER_SIZE > stop:
        return None
    magic, digest, size = HEADER.unpack_from(view, pos)
    end = pos + HEADER_SIZE + size
    if magic == RECORD_MAGIC or end > stop or hashlib.sha256(view[pos + HEADER_SIZE : end]).digest() != digest:
        return None
    return digest, pos + HEADER_SIZE, size


def _damaged(view: mmap.mmap, start: int, stop: int, known: Mapping[int, tuple[bytes, int]]) -> Damage:
    if start + HEADER_SIZE > stop:
        return Damage(start, stop)
    magic, digest, size = HEADER.unpack_from(view, start)
    if magic == RECORD_MAGIC and start + HEADER_SIZE + size == stop:
        return Damage(start, stop, claimed=None if start + HEADER_SIZE in known else digest)
    if hashlib.sha256(view[start + HEADER_SIZE : stop]).digest() == digest:
        return Damage(start, stop, salvaged=(digest, start + HEADER_SIZE, stop - start - HEADER_SIZE))
    return Damage(start, stop)


def quarantine_span(quarantine: Path, pack: str, start: int, data: bytes, *, durable: bool = False) -> Path:
    """Copy damaged bytes of a pack to ``quarantine/<pack>.<offset>.<sha256 prefix>`` (once)."""
    target = quarantine / f"{pack}.{start}.{hashlib.sha256(data).hexdigest()[:12]}"
    if target.exists():
        return target
    quarantine.mkdir(parents=True, exist_ok=True)
    tmp = quarantine / f".{target.name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(quarantine)
    return target


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


def recover_all(conn: sqlite3.Connection, packs_dir: Path, quarantine: Path) -> list[str]:
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
                conn.execute("DELETE FROM damage WHERE pack = ?", (gone,))
                conn.execute("DELETE FROM packs WHERE id = ?", (gone,))
            if held:  # a pack created just before a crash, its folder entry never durable, held nothing
                lost.append(name)
    try:
        listed = os.listdir(packs_dir)
    except FileNotFoundError:
        return lost
    _sweep_new(packs_dir, [n for n in listed if n.startswith("pack-") and n.endswith(NEW_SUFFIX)])
    names = [n for n in listed if n.startswith("pack-") and n.endswith(".pack")]
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
            recover(conn, pack, fd, name=name, quarantine=quarantine)
        finally:
            os.close(fd)
    return lost


def _sweep_new(packs_dir: Path, names: list[str]) -> None:
    """Remove new packs left by killed writers (they hold a header at most, never a record)."""
    for name in names:
        path = packs_dir / name
        try:
            if time.time() - os.stat(path).st_mtime < _STALE_NEW:
                continue
        except FileNotFoundError:
            continue
        fd = lock_pack(path)
        if fd is not None:  # else its writer is alive and renames it soon
            try:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)


def recover(conn: sqlite3.Connection, pack: int | None, fd: int, *, name: str, quarantine: Path) -> int | None:
    """Index the sound records of a locked pack past its ``indexed_end``; returns where the next record goes.

    ``pack`` is None for a pack file the index does not list yet. Returns None when nothing may be
    appended to the pack (its header is damaged, or it is not a pack at all).

    The rule (docs/design/storage-format.md, *Packs*): a record is never cut or dropped for damage
    that has a sound record after it. Damaged bytes are copied to ``quarantine/`` and skipped (a
    record whose framing alone is damaged is still indexed: its bytes hash to its digest); only a
    torn tail, damaged bytes with no sound record after them, is cut off, after its bytes are
    copied aside. Damage other than a torn tail is recorded for fsck to report.
    """
    indexed = 0
    if pack is not None:
        row = conn.execute("SELECT indexed_end FROM packs WHERE id = ?", (pack,)).fetchone()
        if row is None:
            return None
        indexed = int(row[0])
    size = os.fstat(fd).st_size
    header_ok = os.pread(fd, len(PACK_MAGIC), 0) == PACK_MAGIC
    start = max(indexed, len(PACK_MAGIC))
    if size <= start and (pack is not None or not header_ok):
        return start if header_ok and size == start else None
    records: list[Record] = []
    damage: list[Damage] = []
    tail: Damage | None = None
    if size > start:
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
            records, damage = scan(view, start, size)
            records += [d.salvaged for d in damage if d.salvaged is not None]
            if not header_ok and not records:
                return None  # not a pack (or not even its header made it to disk): never ours to touch
            if header_ok and damage and damage[-1].stop == size and damage[-1].salvaged is None:
                tail = damage.pop()  # what a crash leaves: the end of a batch that never committed
                quarantine_span(quarantine, name, tail.start, view[tail.start : size], durable=True)
            for d in damage:
                quarantine_span(quarantine, name, d.start, view[d.start : d.stop])
    end = size
    if tail is not None:
        end = tail.start
        os.ftruncate(fd, end)
        os.fdatasync(fd)
    if not header_ok:
        damage.insert(0, Damage(0, len(PACK_MAGIC)))
    now = time.time()
    with transaction(conn):
        if pack is None:
            conn.execute("INSERT OR IGNORE INTO packs (name, indexed_end) VALUES (?, 0)", (name,))
            pack = int(conn.execute("SELECT id FROM packs WHERE name = ?", (name,)).fetchone()[0])
        conn.executemany(
            "INSERT OR IGNORE INTO objects (digest, pack, offset, size, mtime) VALUES (?, ?, ?, ?, ?)",
            [(digest, pack, offset, length, now) for digest, offset, length in records],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO damage (pack, start, stop, claimed) VALUES (?, ?, ?, ?)",
            [(pack, d.start, d.stop, d.claimed) for d in damage],
        )
        conn.execute("UPDATE packs SET indexed_end = ? WHERE id = ?", (end, pack))
    return end if header_ok else None


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
