"""Packed small objects: append-only pack files and an index (storage format 2).

Layout (see docs/design/storage-format.md)::

    objects/packs/pack-<hex>.pack   b"LVPACK2\\n", then records: b"LVOB" | sha256 (32 bytes) | size (u64 LE) | bytes
    objects/packs/index.sqlite      digest -> (pack, offset, size, mtime); pack -> indexed_end

Creating one file per small object is what makes a snapshot of 20,000 small files slow; appending
them to one pack and making it durable with one ``fdatasync`` is not. A pack has one writer at a
time, a thread holding an exclusive ``flock`` on it, so its records are written in order. A batch
appends its records, makes the pack durable, then inserts their index rows in one transaction.

The index is derived data and the packs are the truth: every process that opens the index first
re-indexes any record past a pack's ``indexed_end`` (a batch killed between its ``fdatasync`` and
its index commit, or an index commit lost with the power) and any pack file the index does not
list, and cuts off a torn record at a pack's end. A re-indexed record nothing refers to is an
orphan, which ``gc`` collects. Packed objects are deleted by deleting their index row; ``compact``
(run by ``gc``) rewrites packs that are mostly dead space.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

from labvault.errors import IntegrityError, StorageError
from labvault.storage.objects.packfile import (
    HEADER,
    HEADER_SIZE,
    PACK_MAGIC,
    RECORD_MAGIC,
    fsync_dir,
    lock_pack,
    recover,
    recover_all,
    transaction,
)

__all__ = ["PACK_TARGET", "PackStore"]

PACK_TARGET = 64 * 1024 * 1024  # a writer starts a new pack once its pack has grown past this
_FLUSH = 4 * 1024 * 1024  # appended records are written out in chunks of about this size
_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    indexed_end INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    digest BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL
) WITHOUT ROWID;
"""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guard(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report a failure of the pack index as one StorageError (never a raw sqlite3 traceback)."""

    @wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            text = str(exc)
            if "full" in text:
                raise StorageError(
                    "disk full while updating the pack index", hint="free some space, then run the command again"
                ) from exc
            raise StorageError(
                f"the pack index failed: {text}",
                hint="run `labvault fsck`; the index is rebuilt from the packs if it is deleted",
            ) from exc

    return wrapper


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
    refreshed: list[bytes] = field(default_factory=list)


class PackStore:
    """Small objects in pack files, found through an SQLite index."""

    def __init__(self, packs_dir: Path) -> None:
        self.dir = packs_dir
        self.index_path = packs_dir / "index.sqlite"
        self._local = threading.local()
        self._names: dict[int, str] = {}
        self._read_fds: dict[int, int] = {}
        self._fds_lock = threading.Lock()
        self._recovered = False
        self._seen = False
        self.lost: list[str] = []  # pack files the index listed that were gone (fsck reports them)
        self._recover_lock = threading.Lock()

    # -- index --------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid != os.getpid():  # forked: never share a connection
            conn = self._local.conn = None
        if conn is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.index_path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            # The packs are durable before their rows commit, and lost rows are rebuilt from them.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._local.conn = conn
            self._local.pid = os.getpid()
            if not self._recovered:
                with self._recover_lock:
                    if not self._recovered:
                        self.lost.extend(recover_all(conn, self.dir))
                        self._recovered = True
        return conn

    def _exists(self) -> bool:
        """Whether there is anything packed to look at (without creating the index to find out)."""
        if self._seen or getattr(self._local, "conn", None) is not None or self.index_path.exists():
            self._seen = True
        else:
            with contextlib.suppress(FileNotFoundError):
                self._seen = any(n.endswith(".pack") for n in os.listdir(self.dir))  # an index to rebuild
        return self._seen

    @_guard
    def lookup(self, hexd: str) -> tuple[int, int, int, float] | None:
        """``(pack, offset, size, mtime)`` of a packed object, or None."""
        if not self._exists():
            return None
        row = (
            self._db()
            .execute("SELECT pack, offset, size, mtime FROM objects WHERE digest = ?", (bytes.fromhex(hexd),))
            .fetchone()
        )
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    @_guard
    def read(self, hexd: str) -> bytes | None:
        """The stored bytes of a packed object (unverified), or None if it is not packed."""
        for attempt in range(2):
            where = self.lookup(hexd)
            if where is None:
                return None
            pack, offset, size, _ = where
            try:
                data = os.pread(self._read_fd(pack), size, offset)
            except FileNotFoundError:  # compacted away meanwhile: the index now points elsewhere
                self._forget_fd(pack)
                if attempt:
                    raise IntegrityError(
                        f"object sha256:{hexd} is in a pack file that is missing", hint="run `labvault fsck`"
                    ) from None
                continue
            return data
        return None

    def _read_fd(self, pack: int) -> int:
        with self._fds_lock:
            fd = self._read_fds.get(pack)
            if fd is None:
                fd = os.open(self.dir / self._name(pack), os.O_RDONLY)
                self._read_fds[pack] = fd
            return fd

    def _forget_fd(self, pack: int) -> None:
        with self._fds_lock:
            fd = self._read_fds.pop(pack, None)
            self._names.pop(pack, None)
        if fd is not None:
            os.close(fd)

    def _name(self, pack: int) -> str:
        name = self._names.get(pack)
        if name is None:
            row = self._db().execute("SELECT name FROM packs WHERE id = ?", (pack,)).fetchone()
            if row is None:
                raise FileNotFoundError(errno.ENOENT, "pack not indexed", str(pack))
            name = self._names[pack] = str(row[0])
        return name

    @_guard
    def locate(self, hexd: str) -> tuple[Path, int, int] | None:
        """``(pack file, offset, size)`` of a packed object, or None."""
        where = self.lookup(hexd)
        if where is None:
            return None
        return self.dir / self._name(where[0]), where[1], where[2]

    @_guard
    def rows(self) -> list[tuple[str, int, float]]:
        """``(digest hex, size, mtime)`` of every packed object, in digest order."""
        if not self._exists():
            return []
        rows = self._db().execute("SELECT digest, size, mtime FROM objects ORDER BY digest").fetchall()
        return [(digest.hex(), int(size), float(mtime)) for digest, size, mtime in rows]

    @_guard
    def with_prefix(self, prefix: str) -> list[str]:
        if not self._exists():
            return []
        low = bytes.fromhex(prefix + "0" * (len(prefix) % 2))
        high = bytes.fromhex(prefix + "f" * (len(prefix) % 2)) + b"\xff" * 32
        rows = self._db().execute("SELECT digest FROM objects WHERE digest >= ? AND digest <= ?", (low, high))
        return sorted(h for (d,) in rows if (h := d.hex()).startswith(prefix))

    @_guard
    def delete(self, hexd: str) -> bool:
        if not self._exists():
            return False
        cur = self._db().execute("DELETE FROM objects WHERE digest = ?", (bytes.fromhex(hexd),))
        return cur.rowcount > 0

    # -- writes (one writer per thread; the caller holds the gc lock shared) --------------------
    @_guard
    def append(self, hexd: str, data: bytes) -> None:
        """Stage ``data`` in this thread's pack; it becomes visible at :meth:`commit`."""
        writer = self._writer()
        digest = bytes.fromhex(hexd)
        offset = writer.end + HEADER_SIZE
        writer.buffer += HEADER.pack(RECORD_MAGIC, digest, len(data))
        writer.buffer += data
        writer.staged.append((digest, offset, len(data)))
        writer.end = offset + len(data)
        if len(writer.buffer) >= _FLUSH:
            self._flush(writer)

    @_guard
    def refresh(self, hexd: str) -> None:
        """Mark a packed object as just put again, so gc's grace period starts over (at commit)."""
        self._refreshed().append(bytes.fromhex(hexd))

    def _refreshed(self) -> list[bytes]:
        refreshed: list[bytes] | None = getattr(self._local, "refreshed", None)
        if refreshed is None:
            refreshed = self._local.refreshed = []
        return refreshed

    @_guard
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

    @_guard
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
        if writer is not None and writer.pid != os.getpid():  # forked: the parent keeps appending to it
            os.close(writer.fd)
            writer = self._local.writer = None
        return writer

    def _writer(self) -> _Writer:
        writer = self._own_writer()
        if writer is None:
            writer = self._take_over() or self._new_pack()
            self._local.writer = writer
        return writer

    def _retire(self, writer: _Writer) -> None:
        self._local.writer = None
        os.close(writer.fd)  # releases the flock: the pack is full, nobody will append to it again

    def close(self) -> None:
        writer = self._own_writer()
        if writer is not None:
            self._retire(writer)
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._fds_lock:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()

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
            end = recover(conn, pack, fd)
            if end is None:
                os.close(fd)
                continue
            return _Writer(pack, fd, end, new=False, start=end)
        return None

    def _new_pack(self) -> _Writer:
        name = f"pack-{time.time_ns():x}-{secrets.token_hex(4)}.pack"
        path = self.dir / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, PACK_MAGIC)
            conn = self._db()
            pack = int(
                conn.execute(
                    "INSERT INTO packs (name, indexed_end) VALUES (?, ?) RETURNING id", (name, len(PACK_MAGIC))
                ).fetchone()[0]
            )
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return _Writer(pack, fd, len(PACK_MAGIC), new=True, start=len(PACK_MAGIC))

    # -- maintenance (the caller holds the gc lock exclusively) --------------------------------
    @_guard
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
        live: dict[int, int] = dict(
            conn.execute(f"SELECT pack, SUM(size + {HEADER_SIZE}) FROM objects GROUP BY pack").fetchall()
        )
        reclaimed = 0
        for pack, name in conn.execute("SELECT id, name FROM packs").fetchall():
            path = self.dir / name
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            used = live.get(pack, 0)
            if size - len(PACK_MAGIC) - used < min_dead * size or size <= len(PACK_MAGIC):
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
        rows = conn.execute(
            "SELECT digest, offset, size FROM objects WHERE pack = ? ORDER BY offset", (pack,)
        ).fetchall()
        moved: list[tuple[int, int, bytes]] = []
        writer: _Writer | None = None
        if rows:
            writer = self._new_pack()
            with open(self.dir / name, "rb", buffering=0) as src:
                for digest, offset, length in rows:
                    data = os.pread(src.fileno(), length, offset)
                    if not verify(digest.hex(), data):
                        continue
                    self._append_to(writer, digest, data)
                    moved.append((writer.pack_id, writer.end - length, digest))
            self._flush(writer)
            os.fdatasync(writer.fd)
            fsync_dir(self.dir)
        try:
            with transaction(conn):
                conn.executemany("UPDATE objects SET pack = ?, offset = ? WHERE digest = ?", moved)
                if writer is not None:
                    conn.execute("UPDATE packs SET indexed_end = ? WHERE id = ?", (writer.end, writer.pack_id))
                conn.execute("DELETE FROM objects WHERE pack = ?", (pack,))  # what verify left out
                conn.execute("DELETE FROM packs WHERE id = ?", (pack,))
        finally:
            if writer is not None:
                os.close(writer.fd)
        os.unlink(self.dir / name)
        new_size = writer.end if writer is not None else 0
        return size - new_size

    @staticmethod
    def _append_to(writer: _Writer, digest: bytes, data: bytes) -> None:
        writer.buffer += HEADER.pack(RECORD_MAGIC, digest, len(data))
        writer.buffer += data
        writer.end += HEADER_SIZE + len(data)

    @_guard
    def pack_files(self) -> list[tuple[str, int, int]]:
        """``(name, file size, live bytes)`` of every indexed pack (for fsck and ``object ls``)."""
        if not self._exists():
            return []
        conn = self._db()
        live = dict(conn.execute(f"SELECT pack, SUM(size + {HEADER_SIZE}) FROM objects GROUP BY pack").fetchall())
        out = []
        for pack, name in conn.execute("SELECT id, name FROM packs ORDER BY id").fetchall():
            try:
                size = os.stat(self.dir / name).st_size
            except FileNotFoundError:
                size = -1
            out.append((str(name), size, int(live.get(pack, 0))))
        return out
