"""The stat cache: (inode, size, mtime_ns, ctime_ns) -> sha256, so unchanged files are not re-read.

One file per dataset folder under ``.labvault/cache/stat/`` (a cache: deleting it only costs a
re-hash). It is safe against "racily clean" files, as git's index is: before a scan we read the
filesystem clock (the mtime of a file we just wrote, so it is the same clock and granularity as the
data's timestamps). An entry whose mtime or ctime is not strictly older than that stamp may have
been modified again within the same timestamp tick after we hashed it, so it is never trusted and
is re-hashed next time.

Files are hashed with a before/after ``fstat``: a file that changed while being read raises
:class:`FileChanged` instead of being recorded under a wrong hash.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import secrets
from pathlib import Path
from typing import Any

from labvault.errors import Conflict

__all__ = ["CHUNK", "FileChanged", "StatCache", "fs_clock_ns", "hash_file", "read_file_checked"]

CHUNK = 8 * 1024 * 1024
_FORMAT = 1
_SMALL = 1024 * 1024

#: rel path -> (ino, size, mtime_ns, ctime_ns, sha256 hex, tabular profile or None)
Entry = tuple[int, int, int, int, str, Any]


class FileChanged(Conflict):
    """A file changed while it was being read; nothing is recorded under a wrong hash."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            f"{path} changed while it was being read",
            hint="wait until whatever is writing it has finished, then run the command again",
        )
        self.path = str(path)


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_file_checked(path: Path | str) -> tuple[bytes, tuple[int, int, int, int]] | None:
    """Read a small file whole, with its stat key; None if it is too large to read at once."""
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        if before.st_size > _SMALL:
            return None
        data = f.read(before.st_size + 1)
        after = os.fstat(f.fileno())
    if len(data) != before.st_size or _key(before) != _key(after):
        raise FileChanged(path)
    return data, _key(after)


def hash_file(path: Path | str) -> tuple[str, tuple[int, int, int, int]]:
    """sha256 hex and the stat key, read in large buffers; raises FileChanged on a torn read."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        if before.st_size <= _SMALL:
            data = f.read(before.st_size + 1)
            h.update(data)
            n = len(data)
        else:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            n = 0
            while k := f.readinto(buf):
                h.update(view[:k])
                n += k
        after = os.fstat(f.fileno())
    if n != before.st_size or _key(before) != _key(after):
        raise FileChanged(path)
    return h.hexdigest(), _key(after)


def fs_clock_ns(where: Path) -> int:
    """The filesystem's current time as it stamps files (same clock and granularity as the data)."""
    where.mkdir(parents=True, exist_ok=True)
    probe = where / ".stamp"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"x")
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)


class StatCache:
    """The cached hashes of one dataset folder's working copy."""

    def __init__(
        self, path: Path, entries: dict[str, Entry] | None = None, stamp_ns: int = 0, synced: str | None = None
    ) -> None:
        self.path = path
        self.entries: dict[str, Entry] = entries or {}
        self.stamp_ns = stamp_ns  # entries not strictly older than this are racy
        # The root tree (hex) this working copy was last made equal to by `add` or `checkout`: the
        # baseline for "local modifications", which survives a `git checkout` of labvault.lock.
        self.synced = synced
        self.dirty = False

    @classmethod
    def for_dataset(cls, vault_dir: Path, dataset_path: Path) -> StatCache:
        key = hashlib.sha256(os.fsencode(os.path.abspath(dataset_path))).hexdigest()[:24]
        return cls.load(vault_dir / "cache" / "stat" / f"{key}.bin")

    @classmethod
    def load(cls, path: Path) -> StatCache:
        try:
            with open(path, "rb") as f:
                doc = marshal.load(f)
            if doc[0] != _FORMAT:
                raise ValueError("old format")
            return cls(path, doc[2], doc[1], doc[3])
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            return cls(path)  # a missing or unreadable cache is an empty one

    def lookup(self, rel: str, key: tuple[int, int, int, int]) -> Entry | None:
        """The cached entry if the file is unchanged since it was hashed and not racily clean."""
        e = self.entries.get(rel)
        if e is None or e[0] != key[0] or e[1] != key[1] or e[2] != key[2] or e[3] != key[3]:
            return None
        if e[2] >= self.stamp_ns or e[3] >= self.stamp_ns:
            return None
        return e

    def put(self, rel: str, key: tuple[int, int, int, int], sha_hex: str, profile: Any = None) -> None:
        self.entries[rel] = (key[0], key[1], key[2], key[3], sha_hex, profile)
        self.dirty = True

    def retain(self, keep: set[str] | dict[str, Any]) -> None:
        """Drop entries for paths that no longer exist."""
        if len(self.entries) != len(keep) or any(k not in keep for k in self.entries):
            self.entries = {k: v for k, v in self.entries.items() if k in keep}
            self.dirty = True

    def save(self, stamp_ns: int) -> None:
        """Write atomically (no fsync: it is a cache). ``stamp_ns`` is the clock read before the scan."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        with open(tmp, "wb") as f:
            marshal.dump((_FORMAT, stamp_ns, self.entries, self.synced), f)
        os.replace(tmp, self.path)
        self.stamp_ns = stamp_ns
        self.dirty = False
