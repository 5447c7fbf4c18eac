"""Packed small objects: writing to append-only pack files, and compacting them (storage format 2).

The format is in ``packfile.py``, the index in ``packindex.py``, the rules in
docs/design/storage-format.md (*Packs*).

Creating one file per small object is what makes a snapshot of 20,000 small files slow; appending
them to one pack and making it durable with one ``fdatasync`` is not. A pack has one writer at a
time, a thread holding an exclusive ``flock`` on it, so its records are written in order. A batch
appends its records, makes the pack durable, then inserts their index rows in one transaction.

The index is derived data and the packs are the truth: every process that opens the index first
re-indexes any record past a pack's ``indexed_end`` (a batch killed between its ``fdatasync`` and
its index commit, or an index commit lost with the power) and any pack file the index does not
list, skipping damaged bytes and cutting off only a torn tail (the rule is in ``packfile.recover``).
A re-indexed record nothing refers to is an orphan, which ``gc`` collects. Packed objects are
deleted by deleting their index row; ``compact`` (run by ``gc``) rewrites packs that are mostly dead
space or damaged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.indexdb import translate_sqlite_errors
from labvault.storage.objects.packfile import (
    HEADER,
    HEADER_SIZE,
    NEW_SUFFIX,
    PACK_MAGIC,
    RECORD_MAGIC,
    fsync_dir,
    lock_pack,
    recover,
    transaction,
)
from labvault.storage.objects.packindex import PackIndex
from labvault.storage.objects.packrows import repair_rows

__all__ = ["PACK_TARGET", "PackStore"]

PACK_TARGET = 64 * 1024 * 1024  # a writer starts a new pack once its pack has grown past this
_FLUSH = 4 * 1024 * 1024  # appended records are written out in chunks of about this size


@dataclass(slots=True)
class _Writer:
    """One thread's pack: its open file (flocked), where the next record goes, what is staged."""

    pack_id: int
    fd: int
    end: int
    new: bool  # created by this writer: its folder entry is made durable at the first commit
    pid: int = field(default_factory=os.getpid)
    start: int = 0  # where the open batch's records begin (cut back to here if it fails)
    buffer: bytearray = field(default_factory=bytearray)
    staged: list[tuple[bytes, int, int]] = field(default_factory=list)  # (digest, offset, size)


class PackStore(PackIndex):
    """Small objects in pack files, found through an SQLite index (see :class:`PackIndex`)."""

    def __init__(self, packs_dir: Path, quarantine_dir: Path | None = None) -> None:
        super().__init__(packs_dir, quarantine_dir)
        self._writers: dict[int, _Writer] = {}  # every thread's, by id: close_all() lets go of them

    @translate_sqlite_errors
    def append(self, hexd: str, data: bytes) -> None:
        """Stage ``data`` in this thread's pack; it becomes visible at :meth:`commit`."""
        writer = self._writer()
        digest = bytes.fromhex(hexd)
        self._append_to(writer, digest, data)
        writer.staged.append((digest, writer.end - len(data), len(data)))
        if len(writer.buffer) >= _FLUSH:
            self._flush(writer)

    @translate_sqlite_errors
    def append_framed(self, frames: memoryview, records: list[tuple[bytes, int, int]]) -> None:
        """Stage whole records, header and bytes, as another pack holds them, in this thread's pack.

        ``records`` are ``(digest, offset of its bytes in frames, size)``; the caller has checked each
        header and hashed each record's bytes (``packcopy.check_frames``). Visible at :meth:`commit`.
        """
        writer = self._writer()
        self._flush(writer)
        base = writer.end
        done = 0
        while done < len(frames):  # written as they are: no copy through the buffer
            done += os.pwrite(writer.fd, frames[done:], base + done)
        writer.end += len(frames)
        writer.staged.extend((digest, base + offset, size) for digest, offset, size in records)

    @translate_sqlite_errors
    def refresh(self, hexd: str) -> None:
        """Mark a packed object as just put again, so gc's grace period starts over (at commit)."""
        self._refreshed().append(bytes.fromhex(hexd))

    def _refreshed(self) -> list[bytes]:
        refreshed: list[bytes] | None = getattr(self._local, "refreshed", None)
        if refreshed is None:
            refreshed = self._local.refreshed = []
        return refreshed

    @translate_sqlite_errors
    def commit(self) -> None:
        """Make this thread's staged records durable (one fdatasync), then index them."""
        writer = self._own_writer()
        refreshed = self._refreshed()
        staged = writer.staged if writer is not None else []
        if not staged and not refreshed:
            return
        now = time.time()
        if writer is not None and staged:
            self._flush(writer)
            os.fdatasync(writer.fd)
            if writer.new:
                fsync_dir(self.dir)
                writer.new = False
        conn = self._db()
        try:
            with transaction(conn):
                if writer is not None and staged:
                    conn.executemany(
                        "INSERT OR IGNORE INTO objects (digest, pack, offset, size, mtime) VALUES (?, ?, ?, ?, ?)",
                        [(d, writer.pack_id, off, size, now) for d, off, size in staged],
                    )
                    conn.execute(
                        "UPDATE packs SET indexed_end = MAX(indexed_end, ?) WHERE id = ?", (writer.end, writer.pack_id)
                    )
                if refreshed:
                    conn.executemany("UPDATE objects SET mtime = ? WHERE digest = ?", [(now, d) for d in refreshed])
        finally:
            refreshed.clear()
        if writer is not None:
            writer.staged.clear()
            writer.start = writer.end
            if writer.end >= PACK_TARGET:
                self._retire(writer)

    @translate_sqlite_errors
    def discard(self) -> None:
        """Drop this thread's staged records: cut the pack back to where the batch began."""
        self._refreshed().clear()
        writer = self._own_writer()
        if writer is None:
            return
        writer.buffer = bytearray()
        writer.staged.clear()
        writer.end = writer.start
        with contextlib.suppress(OSError):
            os.ftruncate(writer.fd, writer.start)

    def _flush(self, writer: _Writer) -> None:
        if writer.buffer:
            at = writer.end - len(writer.buffer)
            with memoryview(writer.buffer) as view:
                done = 0
                while done < len(view):
                    done += os.pwrite(writer.fd, view[done:], at + done)
            writer.buffer = bytearray()

    def _own_writer(self) -> _Writer | None:
        writer: _Writer | None = getattr(self._local, "writer", None)
        if writer is not None and writer.fd < 0:  # closed by close_all()
            writer = self._local.writer = None
        elif writer is not None and writer.pid != os.getpid():  # forked: the parent keeps appending to it
            os.close(writer.fd)
            writer = self._local.writer = None
        return writer

    def _writer(self) -> _Writer:
        writer = self._own_writer()
        if writer is None:
            writer = self._take_over() or self._new_pack()
            self._local.writer = writer
            with self._fds_lock:
                self._writers[id(writer)] = writer
        return writer

    def _retire(self, writer: _Writer) -> None:
        if getattr(self._local, "writer", None) is writer:
            self._local.writer = None
        with self._fds_lock:
            self._writers.pop(id(writer), None)
            fd, writer.fd = writer.fd, -1
        if fd >= 0:
            os.close(fd)  # releases the flock: others may append to the pack, or compact it

    def close(self) -> None:
        """Let go of this thread's pack (its flock) and close its index connection."""
        writer = self._own_writer()
        if writer is not None:
            self._retire(writer)
        super().close()

    def close_all(self) -> None:
        """Let go of every thread's pack that has no batch open, and close every index connection.

        A pack held by a writer is skipped by recovery and by compaction, in every process, so a
        store that is done with (``Vault.close``) must not keep one.
        """
        with self._fds_lock:
            idle = [w for w in self._writers.values() if not w.staged and not w.buffer and w.pid == os.getpid()]
        for writer in idle:
            self._retire(writer)
        super().close_all()

    def _batch_open(self) -> bool:
        with self._fds_lock:
            return any((w.staged or w.buffer) and w.pid == os.getpid() for w in self._writers.values())

    def _take_over(self) -> _Writer | None:
        """Reuse a pack nobody is writing to that still has room (fewer, fuller packs)."""
        conn = self._db()
        rows = conn.execute(
            "SELECT id, name FROM packs WHERE indexed_end < ? ORDER BY id DESC LIMIT 4", (PACK_TARGET,)
        ).fetchall()
        for pack, name in rows:
            fd = lock_pack(self.dir / name)
            if fd is None:
                continue
            end = recover(conn, pack, fd, name=name, quarantine=self.quarantine_dir)
            if end is None:
                os.close(fd)
                continue
            return _Writer(pack, fd, end, new=False, start=end)
        return None

    def _new_pack(self) -> _Writer:
        """A new pack, locked and holding its header before its name is visible.

        Recovery in another process locks every pack it can: a pack created under its own name
        and locked after would be recovery's to lock first, and its writer would then fail. So it
        is created under a name recovery does not list (``packfile.NEW_SUFFIX``) and renamed.
        """
        name = f"pack-{time.time_ns():x}-{secrets.token_hex(4)}.pack"
        path = self.dir / name
        staging = self.dir / f"{name}{NEW_SUFFIX}"
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        visible = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, PACK_MAGIC)
            os.rename(staging, path)
            visible = True
            conn = self._db()
            pack = int(
                conn.execute(
                    "INSERT INTO packs (name, indexed_end) VALUES (?, ?) RETURNING id", (name, len(PACK_MAGIC))
                ).fetchone()[0]
            )
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path if visible else staging)
            raise
        return _Writer(pack, fd, len(PACK_MAGIC), new=True, start=len(PACK_MAGIC))

    @translate_sqlite_errors
    def compact(self, *, verify: Callable[[str, bytes], bool], min_dead: float = 0.5) -> int:
        """Rewrite packs that are at least ``min_dead`` dead space; returns the bytes reclaimed.

        ``verify(hex, data)`` decides whether a live record is intact (a corrupt one is left out and
        the caller quarantines it). Packs with a live writer are skipped.
        """
        if not self._exists():
            return 0
        writer = self._own_writer()
        if writer is not None:  # our own pack is a candidate too: let go of it
            self._retire(writer)
        conn = self._db()
        live = self._live_bytes(conn)
        damaged = {int(p) for (p,) in conn.execute("SELECT DISTINCT pack FROM damage WHERE claimed IS NULL")}
        reclaimed = 0
        for pack, name in conn.execute("SELECT id, name FROM packs").fetchall():
            path = self.dir / name
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            used = live.get(pack, 0)
            mostly_dead = size - len(PACK_MAGIC) - used >= min_dead * size and size > len(PACK_MAGIC)
            if not (mostly_dead or pack in damaged):  # a damaged pack is rewritten with fresh framing
                continue
            fd = lock_pack(path)
            if fd is None:
                continue
            try:
                reclaimed += self._rewrite(conn, pack, name, size, verify)
            finally:
                os.close(fd)
            self._forget_fd(pack)
        return reclaimed

    def _rewrite(
        self, conn: sqlite3.Connection, pack: int, name: str, size: int, verify: Callable[[str, bytes], bool]
    ) -> int:
        with open(self.dir / name, "rb", buffering=0) as src:
            records = self._live_records(conn, pack, src.fileno())
        moved: list[tuple[int, int, bytes]] = []
        writer: _Writer | None = None
        if records:
            writer = self._new_pack()
            for digest, data in records:
                if not verify(digest.hex(), data):
                    continue
                self._append_to(writer, digest, data)
                moved.append((writer.pack_id, writer.end - len(data), digest))
            self._flush(writer)
            os.fdatasync(writer.fd)
            fsync_dir(self.dir)
        try:
            with transaction(conn):
                conn.executemany("UPDATE objects SET pack = ?, offset = ? WHERE digest = ?", moved)
                if writer is not None:
                    conn.execute("UPDATE packs SET indexed_end = ? WHERE id = ?", (writer.end, writer.pack_id))
                conn.execute("DELETE FROM objects WHERE pack = ?", (pack,))  # what verify left out
                conn.execute("DELETE FROM damage WHERE pack = ?", (pack,))
                conn.execute("DELETE FROM packs WHERE id = ?", (pack,))
        finally:
            if writer is not None:
                os.close(writer.fd)
        os.unlink(self.dir / name)
        new_size = writer.end if writer is not None else 0
        return size - new_size

    def _live_records(self, conn: sqlite3.Connection, pack: int, fd: int) -> list[tuple[bytes, bytes]]:
        """``(digest, bytes)`` of the records the index rows of a pack point at, rows checked first.

        A row the record header at its offset does not confirm (and whose bytes do not hash) is
        wrong, not its object: the pack's rows are re-derived from the pack before anything is
        copied, so that a wrong row never gets an intact object left out (``packrows.py``).
        """
        for attempt in range(2):
            rows = conn.execute(
                "SELECT digest, offset, size FROM objects WHERE pack = ? ORDER BY offset", (pack,)
            ).fetchall()
            records: list[tuple[bytes, bytes]] = []
            for digest, offset, length in rows:
                plausible = offset >= HEADER_SIZE + len(PACK_MAGIC) and 0 <= length <= SMALL
                record = os.pread(fd, HEADER_SIZE + length, offset - HEADER_SIZE) if plausible else b""
                data = record[HEADER_SIZE:]
                if (
                    attempt == 0
                    and not record.startswith(HEADER.pack(RECORD_MAGIC, digest, length))
                    and hashlib.sha256(data).digest() != digest
                ):
                    repair_rows(conn, self.dir, pack)
                    break
                records.append((bytes(digest), data))
            else:
                return records
        return records

    @staticmethod
    def _append_to(writer: _Writer, digest: bytes, data: bytes) -> None:
        writer.buffer += HEADER.pack(RECORD_MAGIC, digest, len(data))
        writer.buffer += data
        writer.end += HEADER_SIZE + len(data)
