"""A local read-through cache of remote objects, bounded in bytes, least recently used evicted first.

Layout below the cache folder (``.labvault/cache/objects`` in a team vault)::

    ab/cdef0123...      an object's bytes, named by its sha256 like the store itself
    index/<pack>.idx    pack indexes of the remote store (immutable there; verified by their checksum)

The cache is untrusted like any file read back: an entry is hashed every time it is read, and one that
does not match its name is removed and fetched again. A hit refreshes the entry's modification time,
which is the eviction order; several processes may share the folder, so the bound is kept by each one
re-scanning the folder when its own count says it is over, and is approximate between scans.
Deleting the folder loses nothing. Every write goes through :mod:`labvault.storage.contained`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

from labvault.errors import StorageError
from labvault.storage.contained import Dest

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
            if self._used is None:
                self._used = self._scan_size()
            else:
                self._used += len(data)
            if self._used > self.max_bytes:
                self._evict()

    def remove(self, hexd: str) -> None:
        # A file in the way of the folder is left for the next scan.
        with self._lock, contextlib.suppress(StorageError):
            self._folder().remove(self._rel(hexd))

    def _entries(self) -> list[tuple[float, int, str]]:
        """``(mtime, size, rel)`` of every cached object."""
        found: list[tuple[float, int, str]] = []
        try:
            shards = [e for e in os.scandir(self.path) if len(e.name) == 2 and set(e.name) <= _HEX]
        except FileNotFoundError:
            return found
        for shard in shards:
            try:
                entries = list(os.scandir(shard.path))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime, st.st_size, f"{shard.name}/{entry.name}"))
        return found

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
