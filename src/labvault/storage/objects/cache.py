"""A local read-through cache of remote objects, bounded in bytes, least recently used evicted first.

Layout below the cache folder (``.labvault/cache/objects`` in a team vault)::

    ab/cdef0123...      an object's bytes, named by its sha256 like the store itself
    packs/<pack>        a whole pack of the remote store (its records are read from it by offset)
    index/<pack>        pack indexes of the remote store (immutable there; verified by their checksum)

The cache is untrusted like any file read back: an entry is hashed every time it is read, and one that
does not match its name is removed and fetched again (for a record of a cached pack, the whole pack).
A hit refreshes the entry's modification time, which is the eviction order; several processes may
share the folder, so the bound is kept by each one re-scanning the folder when its own count says it
is over, and is approximate between scans.
Deleting the folder loses nothing. Every write goes through :mod:`labvault.storage.contained`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from labvault.errors import StorageError
from labvault.storage.contained import Dest
from labvault.storage.objects.packfile import HEADER_SIZE
from labvault.storage.objects.remote_packs import record_at

__all__ = ["ObjectCache"]

_LOW_WATER = 0.9  # eviction goes down to this fraction of the bound, so that it does not run on every put
_HEX = set("0123456789abcdef")


class ObjectCache:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._used: int | None = None  # bytes, as of the last scan plus this process's own puts
        self._dest: Dest | None = None
        self._touched: dict[str, float] = {}  # pack -> when this process last refreshed its mtime

    def _folder(self) -> Dest:
        if self._dest is None:
            self._dest = Dest.open(self.path)
        return self._dest

    @staticmethod
    def _rel(hexd: str) -> str:
        return f"{hexd[:2]}/{hexd[2:]}"

    def get(self, hexd: str) -> bytes | None:
        """The cached bytes of ``hexd``, verified; None on a miss (a corrupt entry is removed)."""
        if self.max_bytes <= 0:
            return None
        path = self.path / self._rel(hexd)
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if hashlib.sha256(data).hexdigest() != hexd:
            self.remove(hexd)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: evicted last
        return data

    def has(self, hexd: str) -> bool:
        return self.max_bytes > 0 and os.path.isfile(self.path / self._rel(hexd))

    def put(self, hexd: str, data: bytes) -> None:
        """Keep ``data`` (already verified by the caller) unless it alone is over the bound."""
        if len(data) > self.max_bytes * _LOW_WATER:
            return
        with self._lock:
            self._folder().write_file(self._rel(hexd), data)
            self._account(len(data))

    def _account(self, size: int) -> None:
        """Count ``size`` new bytes (the caller holds the lock); evict if over the bound."""
        self._used = self._scan_size() if self._used is None else self._used + size
        if self._used > self.max_bytes:
            self._evict()

    def remove(self, hexd: str) -> None:
        # A file in the way of the folder is left for the next scan.
        with self._lock, contextlib.suppress(StorageError):
            self._folder().remove(self._rel(hexd))

    def _entries(self) -> list[tuple[float, int, str]]:
        """``(mtime, size, rel)`` of every cached object and pack."""
        found: list[tuple[float, int, str]] = []
        try:
            folders = [e.name for e in os.scandir(self.path) if (len(e.name) == 2 and set(e.name) <= _HEX)]
        except FileNotFoundError:
            return found
        folders.append("packs")
        for folder in folders:
            try:
                entries = list(os.scandir(self.path / folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime, st.st_size, f"{folder}/{entry.name}"))
        return found

    # -- whole packs ----------------------------------------------------------------------------
    def read_record(self, pack: str, offset: int, size: int, digest: bytes) -> bytes | None:
        """A record's verified bytes from a cached pack; None on a miss (a corrupt pack is removed)."""
        if self.max_bytes <= 0:
            return None
        path = self.path / "packs" / pack
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:  # a link or something else in its place: not ours to read
            return None
        try:
            raw = os.pread(fd, HEADER_SIZE + size, offset - HEADER_SIZE) if offset >= HEADER_SIZE else b""
        finally:
            os.close(fd)
        data = record_at(raw, HEADER_SIZE, digest, size)
        if data is None or hashlib.sha256(data).digest() != digest:
            self.drop_pack(pack)
            return None
        now = time.monotonic()
        if now - self._touched.get(pack, 0.0) > 10.0:  # most recently used (once in a while: a syscall)
            self._touched[pack] = now
            with contextlib.suppress(OSError):
                os.utime(path)
        return data

    def has_pack(self, pack: str) -> bool:
        return self.max_bytes > 0 and os.path.isfile(self.path / "packs" / pack)

    def put_pack(self, pack: str, data: bytes) -> None:
        """Keep a whole pack (its records already checked by the caller) unless it is over the bound."""
        if len(data) > self.max_bytes * _LOW_WATER:
            return
        with self._lock:
            self._folder().write_file(f"packs/{pack}", data)
            self._account(len(data))

    def drop_pack(self, pack: str) -> None:
        with self._lock, contextlib.suppress(StorageError):
            self._folder().remove(f"packs/{pack}")

    def fits(self, size: int) -> bool:
        return 0 < size <= self.max_bytes * _LOW_WATER

    def open_entry(self, hexd: str) -> io.FileIO | None:
        """The cached file of ``hexd``, opened for reading (the caller verifies as it reads), or None."""
        if self.max_bytes <= 0:
            return None
        path = self.path / self._rel(hexd)
        try:
            raw = io.FileIO(path, "r")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return raw

    def fill(self, hexd: str, fill: Callable[[int], None]) -> None:
        """Write an entry by descriptor (a large object streamed in); ``fill`` raising keeps nothing."""
        with Dest.open(self.path) as folder:  # its own descriptors: the fill may take long, off the lock
            folder.write(self._rel(hexd), fill)
        with self._lock:
            self._account(os.stat(self.path / self._rel(hexd)).st_size)

    def _scan_size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        entries = sorted(self._entries())
        used = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * _LOW_WATER)
        folder = self._folder()
        for _, size, rel in entries:
            if used <= target:
                break
            with contextlib.suppress(StorageError):
                folder.remove(rel)  # absent (another process evicted it) is fine
            used -= size
        self._used = used

    def usage(self) -> tuple[int, int]:
        """``(objects, bytes)`` held now."""
        entries = self._entries()
        return len(entries), sum(size for _, size, _ in entries)

    # -- pack indexes ---------------------------------------------------------------------------
    def get_index(self, name: str) -> bytes | None:
        try:
            with open(self.path / "index" / name, "rb", buffering=0) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def put_index(self, name: str, data: bytes) -> None:
        with self._lock:
            self._folder().write_file(f"index/{name}", data)

    def drop_index(self, name: str) -> None:
        with self._lock, contextlib.suppress(StorageError):
            self._folder().remove(f"index/{name}")

    def close(self) -> None:
        if self._dest is not None:
            self._dest.close()
            self._dest = None
