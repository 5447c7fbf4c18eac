"""The read side of :class:`~labvault.storage.objects.remote.FsspecObjectStore` (a mixin).

Reads look in the local cache first (verified there), then in the packs the reader knows of, then for
a file of its own; a miss lists ``packs/`` again before it is an answer, since another machine may just
have written the object or compacted its pack. fsspec is not imported here: the store's filesystem is.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, IntegrityError, NotFound
from labvault.refs import Digest, parse_digest
from labvault.storage.contained import Dest
from labvault.storage.objects.cache import ObjectCache
from labvault.storage.objects.fileio import CHUNK, SMALL, VerifyingReader, write_all
from labvault.storage.objects.packfile import HEADER_SIZE
from labvault.storage.objects.protocol import MaterializeMode
from labvault.storage.objects.remote_packs import REMOTE_PACK_TARGET, Location, PackView, record_at

__all__ = ["RemoteReads", "stat_mtime"]

_PACK_MEMORY = 4  # whole packs kept in memory for fsck's verifying reads


class RemoteReads:
    """Needs the store's filesystem, view, cache and the few methods declared here."""

    fs: Any
    url: str
    root: str
    cache: ObjectCache | None
    view: PackView
    _pack_locks: dict[str, threading.Lock]
    _pack_memory: OrderedDict[str, bytes]
    _call: Callable[..., Any]
    _pack_path: Callable[[str, str], str]
    path_of: Callable[[Digest], str]
    refresh: Callable[[], None]
    _view: Callable[[], PackView]
    quarantine: Callable[[Digest], None]
    _quarantine_packed: Callable[[str, bytes], None]
    not_found: Callable[[Digest], NotFound | IntegrityError]

    # -- reads ---------------------------------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        key = bytes.fromhex(digest.hex)
        if self._view().lookup(key) is not None or self._loose_exists(digest):
            return True
        self.refresh()  # another machine may have added it since the last listing
        return self.view.lookup(key) is not None

    def _loose_exists(self, digest: Digest) -> bool:
        return bool(self._call("looking up an object", self.fs.exists, self.path_of(digest)))

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        if self.cache is not None:
            cached = self.cache.get(digest.hex)  # verified by the cache on every read
            if cached is not None:
                return cached
        data, kept = self._fetch(digest, verify=verify)
        if self.cache is not None and not kept and (verify or hashlib.sha256(data).hexdigest() == digest.hex):
            self.cache.put(digest.hex, data)
        return data

    def _fetch(self, digest: Digest, *, verify: bool) -> tuple[bytes, bool]:
        """The object's bytes, and whether they are in the cache already (in a cached pack)."""
        key = bytes.fromhex(digest.hex)
        for attempt in range(2):
            loc = self._view().lookup(key)
            if loc is not None:
                try:
                    return self._read_packed(key, loc, verify=verify)
                except FileNotFoundError:  # compacted into another pack since the listing
                    self.refresh()
                    continue
            try:
                data: bytes = self._call("downloading an object", self.fs.cat_file, self.path_of(digest))
            except FileNotFoundError:
                if attempt == 0:
                    self.refresh()
                    continue
                raise self.not_found(digest) from None
            if verify and hashlib.sha256(data).hexdigest() != digest.hex:
                self.quarantine(digest)
                raise IntegrityError(f"object {digest} at {self.url} is corrupt; moved to quarantine")
            return data, False
        raise self.not_found(digest)

    def _read_packed(self, key: bytes, loc: Location, *, verify: bool) -> tuple[bytes, bool]:
        whole = (
            self.cache is not None
            and loc.size < REMOTE_PACK_TARGET
            and self.view.packs.get(loc.pack, 0) * 4 <= self.cache.max_bytes
        )
        kept = False
        if whole:
            data, kept = self._record_via_cached_pack(key, loc)
        else:
            raw = self._call(
                "downloading an object",
                self.fs.cat_file,
                self._pack_path(loc.pack, "pack"),
                start=loc.offset - HEADER_SIZE,
                end=loc.offset + loc.size,
            )
            data = record_at(raw, HEADER_SIZE, key, loc.size)
        if data is None:
            raise IntegrityError(
                f"object sha256:{key.hex()} is lost: the index of pack {loc.pack} does not match the pack",
                hint="run `labvault fsck`, then restore the object from another copy",
            )
        if verify and not kept and hashlib.sha256(data).digest() != key:
            self._quarantine_packed(key.hex(), data)
            raise IntegrityError(f"object sha256:{key.hex()} at {self.url} is corrupt; moved to quarantine")
        return data, kept

    def _record_via_cached_pack(self, key: bytes, loc: Location) -> tuple[bytes | None, bool]:
        """A record from the cached copy of its pack, downloading the whole pack (one GET) on a miss;
        True with it when it verified and sits in the cache."""
        cache = self.cache
        if cache is None:
            return None, False
        with self.view.lock:
            lock = self._pack_locks.setdefault(loc.pack, threading.Lock())
        with lock:  # one download per pack, however many threads want its records
            hit = cache.read_record(loc.pack, loc.offset, loc.size, key)  # verified
            if hit is not None:
                return hit, True
            pack = self._call("downloading a pack", self.fs.cat_file, self._pack_path(loc.pack, "pack"))
            data = record_at(pack, loc.offset, key, loc.size)
            if data is None or hashlib.sha256(data).digest() != key:
                return data, False  # not kept: the caller quarantines it
            cache.put_pack(loc.pack, pack)  # its other records are verified when they are read
            return data, True

    def _pack_bytes(self, name: str) -> bytes:
        """A whole pack, for fsck's verifying reads (a few kept in memory)."""
        with self.view.lock:
            if name in self._pack_memory:
                self._pack_memory.move_to_end(name)
                return self._pack_memory[name]
        data: bytes = self._call("downloading a pack", self.fs.cat_file, self._pack_path(name, "pack"))
        with self.view.lock:
            self._pack_memory[name] = data
            while len(self._pack_memory) > _PACK_MEMORY:
                self._pack_memory.popitem(last=False)
        return data

    def verify(self, digest: Digest) -> bool:
        """Re-hash the store's copy (never the cache's); False, and quarantined, if corrupt."""
        key = bytes.fromhex(digest.hex)
        loc = self._view().lookup(key)
        if loc is None:
            try:
                self._fetch(digest, verify=True)  # never the cache: the store's own copy
            except IntegrityError:
                return False
            return True
        try:
            data = record_at(self._pack_bytes(loc.pack), loc.offset, key, loc.size)
        except FileNotFoundError:
            raise self.not_found(digest) from None
        if data is None or hashlib.sha256(data).digest() != key:
            if data is not None:
                self._quarantine_packed(digest.hex, data)
            return False
        return True

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        """A packed or small object in memory; a larger one streamed (through the cache if it fits)."""
        if self._view().lookup(bytes.fromhex(digest.hex)) is not None:  # packed: small, read whole
            return io.BytesIO(self.get_bytes(digest, verify=verify))
        cached = self.cache.open_entry(digest.hex) if self.cache is not None else None
        if cached is not None:
            return _verifying(cached, digest, lambda: self._refuse_cached(digest))
        size = self.info(digest).size
        if size > SMALL and self.cache is not None and self.cache.fits(size):
            self._download_into_cache(digest)
            entry = self.cache.open_entry(digest.hex)
            if entry is not None:
                return _verifying(entry, digest, lambda: self._refuse_cached(digest))
        if size > SMALL:
            try:
                raw = self._call("downloading an object", self.fs.open, self.path_of(digest), "rb")
            except FileNotFoundError:
                raise self.not_found(digest) from None
            if not verify:
                return raw  # type: ignore[no-any-return]
            return _verifying(raw, digest, lambda: self._refuse_remote(digest))
        return io.BytesIO(self.get_bytes(digest, verify=verify))

    def _download_into_cache(self, digest: Digest) -> None:
        """Stream a larger object into the cache, hashing it; a corrupt one is quarantined (exit 5)."""
        cache = self.cache
        if cache is None:
            return

        def fill(fd: int) -> None:
            hasher = hashlib.sha256()
            with self._call("downloading an object", self.fs.open, self.path_of(digest), "rb") as src:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    write_all(fd, chunk)
            if hasher.hexdigest() != digest.hex:
                raise _Corrupt

        try:
            cache.fill(digest.hex, fill)
        except _Corrupt:
            self._refuse_remote(digest)

    def _refuse_remote(self, digest: Digest) -> None:
        self.quarantine(digest)
        raise IntegrityError(f"object {digest} at {self.url} is corrupt; moved to quarantine")

    def _refuse_cached(self, digest: Digest) -> None:
        if self.cache is not None:
            self.cache.remove(digest.hex)
        raise IntegrityError(
            f"the locally cached copy of {digest} was corrupt; it was removed",
            hint="run the command again: the object is fetched again from the store",
        )

    def info(self, digest: Digest) -> ObjectInfo:
        key = bytes.fromhex(digest.hex)
        for attempt in range(2):
            loc = self._view().lookup(key)
            if loc is not None:
                return ObjectInfo(digest, loc.size, loc.mtime)
            try:
                st = self._call("looking up an object", self.fs.info, self.path_of(digest))
                return ObjectInfo(digest, int(st.get("size") or 0), stat_mtime(st))
            except FileNotFoundError:
                if attempt == 0:
                    self.refresh()
        raise self.not_found(digest)

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every object, packed or not, in digest order (an object in both places once, newest age)."""
        self.refresh()
        found: dict[str, ObjectInfo] = {
            d.hex(): ObjectInfo(Digest(d.hex()), size, mtime) for d, size, mtime in self.view.objects()
        }
        try:
            listed = self._call("listing objects", self.fs.find, self.root, detail=True)
        except FileNotFoundError:
            listed = {}
        for path, st in listed.items():
            parts = path.rstrip("/").split("/")
            name = parts[-2] + parts[-1] if len(parts) >= 2 else ""
            if len(name) == 64 and len(parts[-2]) == 2 and set(name) <= set("0123456789abcdef"):
                info = ObjectInfo(Digest(name), int(st.get("size") or 0), stat_mtime(st))
                if name not in found or found[name].mtime < info.mtime:
                    found[name] = info
        for hexd in sorted(found):
            yield found[hexd]

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        if ref.is_full:
            return Digest(ref.prefix)
        self.refresh()
        matches = {d.hex() for d, _, _ in self.view.objects() if d.hex().startswith(ref.prefix)}
        try:
            names = self._call("listing objects", self.fs.ls, f"{self.root}/{ref.prefix[:2]}", detail=False)
        except FileNotFoundError:
            names = []
        tails = (str(p).rstrip("/").rsplit("/", 1)[-1] for p in names)
        matches |= {ref.prefix[:2] + n for n in tails if n.startswith(ref.prefix[2:])}
        if not matches:
            raise NotFound(f"no object matches sha256:{ref.prefix} at {self.url}")
        if len(matches) > 1:
            raise AmbiguousReference(f"sha256:{ref.prefix}", [f"sha256:{m}" for m in sorted(matches)])
        return Digest(matches.pop())

    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        """Verified bytes at ``dest``, renamed into place only once they verified (streamed if large)."""
        from labvault.storage.objects.materialize import materialize_into

        with Dest.open(dest.parent, create=False) as into:
            materialize_into(self, digest, into, dest.name)  # type: ignore[arg-type]


class _Corrupt(Exception):
    """A download did not hash to its name (raised inside a cache fill, so that nothing is kept)."""


def _verifying(raw: Any, digest: Digest, on_mismatch: Callable[[], None]) -> BinaryIO:
    # The default buffer: reads of a chunk or more go straight through it (no 8 MiB buffer per object).
    return io.BufferedReader(VerifyingReader(raw, digest.hex, on_mismatch))  # type: ignore[return-value]


def stat_mtime(st: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "updated", "created", "last_modified"):
        value = st.get(key)
        if isinstance(value, int | float):
            return float(value)
        stamp = getattr(value, "timestamp", None)
        if callable(stamp):
            return float(stamp())
    return time.time()
