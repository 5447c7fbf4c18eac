"""The index of packed objects: where each one is, read through a per-thread SQLite connection.

``objects/packs/index.sqlite`` (WAL, ``synchronous=NORMAL``) maps a digest to its pack, offset, size
and last-put time, and each pack to how far it is indexed. It is derived data: on first opening it,
a process re-indexes what the packs hold past it (``packfile.recover_all``), and a read checks its
row against the record header it points at (``packrows.py``). Writing and compaction are in ``packs.py``,
fsck's walk of every pack in ``packcheck.py``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from labvault.errors import IntegrityError
from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.indexdb import switch_to_wal, translate_sqlite_errors
from labvault.storage.objects.packcheck import check_packs
from labvault.storage.objects.packfile import HEADER, HEADER_SIZE, PACK_MAGIC, RECORD_MAGIC, recover_all
from labvault.storage.objects.packrows import repair_rows

__all__ = ["PackIndex"]

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
CREATE TABLE IF NOT EXISTS damage (
    pack INTEGER NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    claimed BLOB,
    PRIMARY KEY (pack, start)
);
"""

_FIRST_RECORD = len(PACK_MAGIC) + HEADER_SIZE  # no record's bytes start before this
_MANY = 500  # digests per look-up query (SQLite allows 32,766 parameters; smaller IN lists plan as well)
_header = HEADER.pack


class PackIndex:
    """Reads of packed objects; :class:`labvault.storage.objects.packs.PackStore` adds the writes."""

    def __init__(self, packs_dir: Path, quarantine_dir: Path | None = None) -> None:
        self.dir = packs_dir
        self.quarantine_dir = quarantine_dir or packs_dir.parent.parent / "quarantine"
        self.index_path = packs_dir / "index.sqlite"
        self._local = threading.local()
        self._names: dict[int, str] = {}
        self._read_fds: dict[int, int] = {}
        self._fds_lock = threading.Lock()
        self._recovered = False
        self._seen = False
        self.lost: list[str] = []  # pack files the index listed that were gone (fsck reports them)
        self._recover_lock = threading.Lock()
        self._conns: list[tuple[int, sqlite3.Connection]] = []  # (pid, conn) of every thread
        self._generation = 0  # bumped by close_all(): a thread's connection from before it is closed

    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.key != (os.getpid(), self._generation):  # forked, or closed
            conn = self._local.conn = None
        if conn is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.index_path, timeout=60.0, isolation_level=None, check_same_thread=False)
            with contextlib.suppress(FileNotFoundError):  # which file it is: set_aside() moves only that one
                self._local.ino = os.stat(self.index_path).st_ino
            switch_to_wal(conn)
            # The packs are durable before their rows commit, and lost rows are rebuilt from them.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._local.conn = conn
            self._local.key = (os.getpid(), self._generation)
            with self._fds_lock:
                self._conns.append((os.getpid(), conn))
            if not self._recovered:
                with self._recover_lock:
                    if not self._recovered:
                        self.lost.extend(recover_all(conn, self.dir, self.quarantine_dir))
                        self._recovered = True
        return conn

    def _batch_open(self) -> bool:
        """Whether a writer of this process has records staged against the index (see PackStore)."""
        return False

    def set_aside(self) -> bool:
        """Move a damaged index file into ``quarantine/``, so that the next use rebuilds it from the packs.

        Refused (False) while a batch of this process is open: its staged rows name packs by their
        id in this index. Another process's index file, made since ours was opened, is not moved.
        """
        ours = getattr(self._local, "ino", None)
        with self._recover_lock:
            if self._batch_open():
                return False
            self.close_all()
            try:
                current: int | None = os.stat(self.index_path).st_ino
            except FileNotFoundError:
                current = None
            if current is not None and current == ours:
                self.quarantine_dir.mkdir(parents=True, exist_ok=True)
                stamp = time.time_ns()
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{self.index_path}{suffix}", self.quarantine_dir / f"index.sqlite{suffix}.{stamp}")
            self._recovered = self._seen = False
            self._names.clear()
        return True

    def _exists(self) -> bool:
        """Whether there is anything packed to look at (without creating the index to find out)."""
        if self._seen or getattr(self._local, "conn", None) is not None or self.index_path.exists():
            self._seen = True
        else:
            with contextlib.suppress(FileNotFoundError):
                self._seen = any(n.endswith(".pack") for n in os.listdir(self.dir))  # an index to rebuild
        return self._seen

    @translate_sqlite_errors
    def lookup(self, hexd: str) -> tuple[int, int, int, float] | None:
        """``(pack, offset, size, mtime)`` of a packed object, or None."""
        if not self._exists():
            return None
        row = (
            self._db()
            .execute("SELECT pack, offset, size, mtime FROM objects WHERE digest = ?", (bytes.fromhex(hexd),))
            .fetchone()
        )
        if row is None:
            return None
        pack, offset, size, mtime = row
        if type(pack) is not int:  # an index written elsewhere is input: a row naming no pack is damage
            raise IntegrityError(
                f"the pack index row of object sha256:{hexd} names no pack", hint="run `labvault fsck`"
            )
        # An offset or size of another type than the schema's cannot be right: read() re-derives the row.
        return (
            pack,
            offset if type(offset) is int else -1,
            size if type(size) is int else -1,
            float(mtime) if type(mtime) in (int, float) else 0.0,
        )

    @translate_sqlite_errors
    def lookup_many(self, digests: Sequence[bytes]) -> dict[bytes, tuple[int, int, int]]:
        """``digest -> (pack, offset, size)`` of those of ``digests`` that are packed (a few queries, not one each)."""
        if not digests or not self._exists():
            return {}
        conn = self._db()
        out: dict[bytes, tuple[int, int, int]] = {}
        for i in range(0, len(digests), _MANY):
            part = digests[i : i + _MANY]
            rows = conn.execute(
                f"SELECT digest, pack, offset, size FROM objects WHERE digest IN ({','.join('?' * len(part))})", part
            )
            # A row of another type than the schema's is wrong: its object is read the one-by-one way.
            out |= {d: (p, o, s) for d, p, o, s in rows if type(p) is type(o) is type(s) is int}
        return out

    @translate_sqlite_errors
    def read(self, hexd: str) -> bytes | None:
        """The stored bytes of a packed object (unverified), or None if it is not packed.

        The index is not trusted: the record header at the row's offset must name the digest and
        the size (read with the bytes, in one ``pread``), or the bytes must hash to the digest (a
        record whose framing alone is damaged). Otherwise the row is wrong, not the object: the
        pack's rows are re-derived from the pack (``packrows.repair_rows``) and the read retried.
        """
        digest = bytes.fromhex(hexd)
        repaired = gone = False
        while True:
            where = self.lookup(hexd)
            if where is None:
                return None
            pack, offset, size, _ = where
            record = b""
            if offset >= _FIRST_RECORD and 0 <= size <= SMALL:  # else the row cannot be right
                try:
                    record = os.pread(self._read_fd(pack), HEADER_SIZE + size, offset - HEADER_SIZE)
                except FileNotFoundError:  # compacted away meanwhile: the index now points elsewhere
                    self._forget_fd(pack)
                    if not gone:
                        gone = True
                        continue
            if len(record) == HEADER_SIZE + size:
                if record.startswith(_header(RECORD_MAGIC, digest, size)):
                    return record[HEADER_SIZE:]
                data = record[HEADER_SIZE:]
                if hashlib.sha256(data).digest() == digest:
                    return data  # its framing is damaged (fsck reports it), its bytes are intact
            if repaired:
                where_to = "is in a pack file that is missing" if gone else "cannot be found in its pack"
                raise IntegrityError(f"object sha256:{hexd} {where_to}", hint="run `labvault fsck`")
            repaired = True
            with self._recover_lock:
                lost = repair_rows(self._db(), self.dir, pack)
            self._forget_fd(pack)
            if digest in lost:
                raise IntegrityError(
                    f"object sha256:{hexd} is lost: its pack record is damaged (copied to quarantine/ by fsck)",
                    hint="run `labvault fsck`; store the object again if you still have it",
                )

    def read_span(self, pack: int, start: int, length: int) -> bytes | None:
        """Bytes ``start..start + length`` of a pack as they are (records whole, unverified; shorter at
        its end), or None if the pack is gone (compacted away since its rows were read)."""
        try:
            return os.pread(self._read_fd(pack), length, start)
        except FileNotFoundError:
            self._forget_fd(pack)
            return None

    def _read_fd(self, pack: int) -> int:
        with self._fds_lock:
            fd = self._read_fds.get(pack)
        if fd is not None:
            return fd
        # The name is looked up outside the lock: a thread's first look-up opens its connection,
        # which takes the same lock.
        opened = os.open(self.dir / self._name(pack), os.O_RDONLY)
        with self._fds_lock:
            fd = self._read_fds.setdefault(pack, opened)
        if fd != opened:  # another thread opened it meanwhile
            os.close(opened)
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

    @translate_sqlite_errors
    def locate(self, hexd: str) -> tuple[Path, int, int] | None:
        """``(pack file, offset, size)`` of a packed object, or None."""
        where = self.lookup(hexd)
        if where is None:
            return None
        return self.dir / self._name(where[0]), where[1], where[2]

    @translate_sqlite_errors
    def rows(self) -> list[tuple[str, int, float]]:
        """``(digest hex, size, mtime)`` of every packed object, in digest order."""
        if not self._exists():
            return []
        rows = self._db().execute("SELECT digest, size, mtime FROM objects ORDER BY digest").fetchall()
        return [(digest.hex(), int(size), float(mtime)) for digest, size, mtime in rows]

    @translate_sqlite_errors
    def with_prefix(self, prefix: str) -> list[str]:
        if not self._exists():
            return []
        low = bytes.fromhex(prefix + "0" * (len(prefix) % 2))
        high = bytes.fromhex(prefix + "f" * (len(prefix) % 2)) + b"\xff" * 32
        rows = self._db().execute("SELECT digest FROM objects WHERE digest >= ? AND digest <= ?", (low, high))
        return sorted(h for (d,) in rows if (h := d.hex()).startswith(prefix))

    @translate_sqlite_errors
    def delete(self, hexd: str) -> bool:
        if not self._exists():
            return False
        cur = self._db().execute("DELETE FROM objects WHERE digest = ?", (bytes.fromhex(hexd),))
        return cur.rowcount > 0

    @translate_sqlite_errors
    def pack_files(self) -> list[tuple[str, int, int]]:
        """``(name, file size, live bytes)`` of every indexed pack (for fsck and ``object ls``)."""
        if not self._exists():
            return []
        conn = self._db()
        live = self._live_bytes(conn)
        out = []
        for pack, name in conn.execute("SELECT id, name FROM packs ORDER BY id").fetchall():
            try:
                size = os.stat(self.dir / name).st_size
            except FileNotFoundError:
                size = -1
            out.append((str(name), size, int(live.get(pack, 0))))
        return out

    @translate_sqlite_errors
    def check(self) -> tuple[list[str], list[str]]:
        """Walk the header and the framing of every record of every pack (fsck; ``packcheck.py``)."""
        if not self._exists():
            return [], []
        return check_packs(self._db(), self.dir, self.quarantine_dir, stored=lambda hexd: self.lookup(hexd) is not None)

    def close(self) -> None:
        """Close this thread's index connection and the pack files opened for reading."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._fds_lock:
            self._conns = [(pid, c) for pid, c in self._conns if c is not conn]
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()

    def close_all(self) -> None:
        """Close every thread's index connection too (the store is done with; see ``Vault.close``)."""
        self.close()
        with self._fds_lock:
            conns, self._conns = self._conns, []
            self._generation += 1
        for pid, conn in conns:
            if pid == os.getpid():  # a connection never crosses a fork
                conn.close()

    @staticmethod
    def _live_bytes(conn: sqlite3.Connection) -> dict[int, int]:
        """Bytes of each pack that indexed records take (headers included): the rest is dead space."""
        rows = conn.execute(f"SELECT pack, SUM(size + {HEADER_SIZE}) FROM objects GROUP BY pack").fetchall()
        return {int(pack): int(size) for pack, size in rows}
