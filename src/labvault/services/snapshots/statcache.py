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
from array import array
from pathlib import Path
from typing import Any

from labvault.errors import Conflict
from labvault.storage.contained import Dest

__all__ = ["CHUNK", "FileChanged", "StatCache", "fs_clock_ns", "hash_file", "read_file_checked"]

CHUNK = 8 * 1024 * 1024
_FORMAT = 2
_SMALL = 1024 * 1024

StatKey = tuple[int, int, int, int]
#: (ino, size, mtime_ns, ctime_ns, sha256 digest bytes, tabular profile or None)
Entry = tuple[int, int, int, int, bytes, Any]


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


def hash_file(path: Path | str) -> tuple[bytes, tuple[int, int, int, int]]:
    """sha256 digest (32 bytes) and the stat key, read in large buffers; raises FileChanged on a torn read."""
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
    return h.digest(), _key(after)


def fs_clock_ns(where: Path) -> int:
    """The filesystem's current time as it stamps files (same clock and granularity as the data)."""

    def stamp(fd: int) -> int:
        os.write(fd, b"x")
        return os.fstat(fd).st_mtime_ns

    with Dest.open(where) as folder:
        return folder.write(".stamp", stamp)


def entry_unchanged(keys: array[int], i: int, key: StatKey, stamp: int) -> bool:
    """Whether entry ``i`` of a key column is ``key`` and older than ``stamp`` (not racily clean).

    The hot loops of ``add`` and ``status`` call this on :meth:`StatCache.columns` directly.
    """
    j = 4 * i
    return (
        keys[j] == key[0]
        and keys[j + 1] == key[1]
        and keys[j + 2] == key[2]
        and keys[j + 3] == key[3]
        and key[2] < stamp
        and key[3] < stamp
    )


class StatCache:
    """The cached hashes of one dataset folder's working copy.

    Stored columnar (paths joined by NUL, the stat keys as one int64 array, digests as one bytes
    string), so 20,000 entries load in milliseconds; entries put since loading live in a dict.
    """

    def __init__(self, path: Path, stamp_ns: int = 0, synced: str | None = None) -> None:
        self.path = path
        self.stamp_ns = stamp_ns  # entries not strictly older than this are racy
        # The root tree (hex) this working copy was last made equal to by `add` or `checkout`: the
        # baseline for "local modifications", which survives a `git checkout` of labvault.lock.
        self.synced = synced
        self.dirty = False
        self._paths: list[str] = []
        self._index: dict[str, int] = {}
        self._keys: array[int] = array("q")
        self._digests = b""
        self._profiles: dict[int, Any] = {}
        self._new: dict[str, Entry] = {}
        self._keep: set[str] | dict[str, Any] | None = None
        self._pruned = False  # retain() dropped some entry
        self._reordered = False  # retain() was given the paths in another order
        self._joined: str | None = None  # the loaded paths, still joined

    @classmethod
    def for_dataset(cls, vault_dir: Path, dataset_path: Path | str) -> StatCache:
        key = hashlib.sha256(os.fsencode(os.path.abspath(dataset_path))).hexdigest()[:24]
        return cls.load(vault_dir / "cache" / "stat" / f"{key}.bin")

    @classmethod
    def load(cls, path: Path) -> StatCache:
        try:
            with open(path, "rb") as f:
                fmt, stamp, synced, joined, keys, digests, profiles = marshal.load(f)
            if fmt != _FORMAT:
                raise ValueError("old format")
            cache = cls(path, stamp, synced)
            cache._paths = joined.split("\0") if joined else []
            cache._joined = joined
            cache._keys.frombytes(keys)
            if not len(cache._keys) == 4 * len(cache._paths) == len(digests) // 8:
                raise ValueError("inconsistent")
            cache._index = dict(zip(cache._paths, range(len(cache._paths)), strict=True))
            cache._digests = digests
            cache._profiles = profiles
            return cache
        except (OSError, ValueError, EOFError, TypeError):
            return cls(path)  # a missing or unreadable cache is an empty one

    def lookup(self, rel: str, key: StatKey) -> tuple[bytes, Any] | None:
        """(digest, profile) if the file is unchanged since it was hashed and not racily clean."""
        stamp = self.stamp_ns
        if self._new:
            e = self._new.get(rel)
            if e is not None:
                if (e[0], e[1], e[2], e[3]) != key or e[2] >= stamp or e[3] >= stamp:
                    return None
                return e[4], e[5]
        i = self._index.get(rel)
        if i is None or not entry_unchanged(self._keys, i, key, stamp):
            return None
        return self._digests[32 * i : 32 * i + 32], self._profiles.get(i)

    def holds_unchanged(self, joined: str, keys: array[int], digests: bytes) -> bool:
        """Whether this cache, as loaded, holds exactly these paths (NUL-joined), with these stat keys
        and these digests, none of them racily clean: then nothing changed, with no per-file work."""
        if self._new or self._joined != joined or self._digests != digests or self._keys != keys:
            return False
        return not keys or (max(keys[2::4]) < self.stamp_ns and max(keys[3::4]) < self.stamp_ns)

    def profile_at(self, i: int) -> Any:
        """The tabular profile stored with entry ``i`` of :meth:`columns`, or None."""
        return self._profiles.get(i)

    def columns(self) -> tuple[dict[str, int], array[int], bytes, int] | None:
        """(index, keys, digests, stamp) for a hot loop to inline :meth:`lookup`; None after puts."""
        return None if self._new else (self._index, self._keys, self._digests, self.stamp_ns)

    def put(self, rel: str, key: StatKey, digest: bytes, profile: Any = None) -> None:
        self._new[rel] = (key[0], key[1], key[2], key[3], digest, profile)
        self.dirty = True

    def retain(self, keep: set[str] | dict[str, Any]) -> None:
        """Drop entries for paths that no longer exist (when saved)."""
        self._keep = keep
        self._pruned = any(p not in keep for p in self._paths) or any(p not in keep for p in self._new)
        # Kept in the order the scan lists the files, which lets status answer in bulk (holds_unchanged).
        self._reordered = self._joined != "\0".join(keep)
        if self._pruned or self._reordered:
            self.dirty = True

    def save(self, stamp_ns: int) -> None:
        """Write atomically (no fsync: it is a cache). ``stamp_ns`` is the clock read before the scan."""
        doc = self._patched() or self._rebuilt()
        with Dest.open(self.path.parent) as folder:
            folder.write_file(self.path.name, marshal.dumps((_FORMAT, stamp_ns, self.synced, *doc)))
        self.stamp_ns = stamp_ns
        self.dirty = False

    def _patched(self) -> tuple[str, bytes, bytes, dict[int, Any]] | None:
        """The columns with re-hashed files updated in place: the common case (no file added or
        removed) without rebuilding 20,000 entries; None when entries come or go."""
        index, new = self._index, self._new
        if self._pruned or self._reordered or self._joined is None or any(p not in index for p in new):
            return None
        keys = array("q", self._keys)
        digests = bytearray(self._digests)
        profiles = dict(self._profiles)
        for p, e in new.items():
            i = index[p]
            keys[4 * i : 4 * i + 4] = array("q", e[:4])
            digests[32 * i : 32 * i + 32] = e[4]
            if e[5] is not None:
                profiles[i] = e[5]
            else:
                profiles.pop(i, None)
        return self._joined, keys.tobytes(), bytes(digests), profiles

    def _rebuilt(self) -> tuple[str, bytes, bytes, dict[int, Any]]:
        """The columns written afresh: in the order of the last scan (``retain``) when there was one,
        so that a folder that did not change is cached in the order the next scan lists it."""
        keep, new, index = self._keep, self._new, self._index
        order = list(keep) if keep is not None else [*(p for p in self._paths if p not in new), *new]
        paths: list[str] = []
        keys = array("q")
        digests: list[bytes] = []
        profiles: dict[int, Any] = {}
        k, d = self._keys, self._digests
        for p in order:
            e = new.get(p)
            if e is not None:
                if e[5] is not None:
                    profiles[len(paths)] = e[5]
                keys.extend(e[:4])
                digests.append(e[4])
            else:
                i = index.get(p)
                if i is None:
                    continue  # scanned but never hashed (it vanished, or it changed while read)
                if i in self._profiles:
                    profiles[len(paths)] = self._profiles[i]
                keys.extend(k[4 * i : 4 * i + 4])
                digests.append(d[32 * i : 32 * i + 32])
            paths.append(p)
        return "\0".join(paths), keys.tobytes(), b"".join(digests), profiles
