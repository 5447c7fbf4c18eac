"""An object store on any fsspec filesystem (``s3://``, ``gs://``, ``az://``, ``memory://``, ``file://``),
shared by many machines at once.

Layout below the URL (the spec is docs/design/storage-format.md, *Remote object stores*)::

    labvault-objects.json           layout marker: {"format": "labvault.objects", "version": 1}
    packs/pack-<id>.pack            small objects put together, immutable (the local pack format)
    packs/pack-<id>.idx             its index, uploaded after it: the pack is visible once this exists
    objects/sha256/ab/cdef...       one object per larger object (over 1 MiB, or streamed)
    quarantine/<hex>.<ms>           corrupt objects set aside by a verifying read or fsck

A batch stages small objects in a pack in memory and uploads it as one object (a new pack each 16 MiB),
then its index, so 1,000 small files are a few PUTs. Readers discover packs by listing ``packs/`` and
reading the index objects they have not seen (kept in the local cache: they never change). Reads go
through a local read-through cache (``cache.py``) when the store has one. fsspec is imported here only,
and every back-end error is translated once, in :meth:`FsspecObjectStore._call`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, ExternalError, IntegrityError, NotFound, ValidationError
from labvault.refs import Digest, parse_digest
from labvault.safeload import loads_json
from labvault.storage.contained import replace_file
from labvault.storage.objects.cache import ObjectCache
from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.packfile import HEADER_SIZE
from labvault.storage.objects.protocol import BasicHousekeeping, MaterializeMode
from labvault.storage.objects.remote_errors import is_backend_error, missing_bucket, translate
from labvault.storage.objects.remote_packs import (
    REMOTE_PACK_TARGET,
    Location,
    PackBuilder,
    PackView,
    decode_index,
    encode_index,
    record_at,
)

__all__ = ["LAYOUT_MARKER", "LAYOUT_VERSION", "FsspecObjectStore"]

LAYOUT_MARKER = "labvault-objects.json"
LAYOUT_VERSION = 1
REFRESH_AFTER = 60.0  # a re-put of an object last put longer ago than this uploads it again (gc's grace)
STALE_UPLOAD = 24 * 3600.0  # a pack with no index this old was left by a killed upload: compact removes it
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}
_BUCKETS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_PACK_MEMORY = 4  # whole packs kept in memory for fsck's verifying reads


class _Batch:
    __slots__ = ("builder", "depth", "done", "loose", "staged")

    def __init__(self) -> None:
        self.depth = 0
        self.builder: PackBuilder | None = None
        self.done: list[PackBuilder] = []  # packs uploaded, their index not yet
        self.loose: dict[str, Any] = {}  # hex -> spooled bytes of a larger object
        self.staged: set[bytes] = set()


class FsspecObjectStore(BasicHousekeeping):
    def __init__(self, url: str, *, cache_dir: Path | None = None, cache_size: int = 0, **storage_options: Any) -> None:
        from fsspec.core import url_to_fs

        self.scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
        if self.scheme in ("s3", "s3a"):
            # Fail in seconds, not minutes, when the endpoint is down; no stale directory listings.
            storage_options.setdefault("config_kwargs", {"connect_timeout": 5, "retries": {"max_attempts": 2}})
            storage_options.setdefault("use_listings_cache", False)
            storage_options.setdefault("skip_instance_cache", True)  # credentials and endpoint read afresh
        try:
            self.fs, base = url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ExternalError(
                f"cannot open {url}: {exc}", hint=f"install the filesystem for {self.scheme}:// (e.g. labvault[s3])"
            ) from exc
        self.url = url
        self.base = base.rstrip("/")
        self.root = f"{self.base}/objects/sha256"
        self.packs_dir = f"{self.base}/packs"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._atomic = bool(set(protocols) & _ATOMIC_PUT)
        self._bucket = self.base.split("/", 1)[0] if self.scheme in _BUCKETS else None
        self.cache = ObjectCache(cache_dir, cache_size) if cache_dir is not None and cache_size > 0 else None
        self.view = PackView()
        self._local = threading.local()
        self._refresh_lock = threading.Lock()
        self._pack_locks: dict[str, threading.Lock] = {}
        self._pack_memory: OrderedDict[str, bytes] = OrderedDict()
        self._quarantined: set[str] = set()
        self._orphans: dict[str, tuple[int, float]] = {}  # packs with no index: name -> (size, mtime)
        self._lost: list[str] = []  # indexes whose pack is gone
        self._marker_missing = self._check_layout()

    # -- errors and raw i/o --------------------------------------------------------------------
    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError as exc:
            if missing_bucket(exc):
                raise translate(exc, url=self.url, scheme=self.scheme, action=action) from exc
            raise
        except Exception as exc:
            if not is_backend_error(exc):
                raise
            raise translate(exc, url=self.url, scheme=self.scheme, action=action) from exc

    def _write(self, path: str, data: bytes) -> None:
        """Upload ``data`` whole: in place where an upload is atomic, else to ``tmp/`` then moved."""
        if self._atomic:
            self._call("uploading objects", self.fs.pipe_file, path, data)
            return
        tmp = f"{self.base}/tmp/{time.time_ns():x}-{threading.get_ident():x}"
        self._call("uploading objects", self.fs.makedirs, f"{self.base}/tmp", exist_ok=True)
        self._call("uploading objects", self.fs.pipe_file, tmp, data)
        self._call("uploading objects", self.fs.makedirs, path.rsplit("/", 1)[0], exist_ok=True)
        self._call("uploading objects", self.fs.mv, tmp, path)

    def _check_layout(self) -> bool:
        """Refuse a store written by a newer labvault; True if the marker is still to be written."""
        name = f"{self.url.rstrip('/')}/{LAYOUT_MARKER}"
        try:
            data = self._call("reading the layout marker", self.fs.cat_file, f"{self.base}/{LAYOUT_MARKER}")
        except FileNotFoundError:
            if self._bucket and not self._call("looking up the bucket", self.fs.exists, self._bucket):
                raise NotFound(
                    f"the bucket {self._bucket!r} of {self.url} does not exist",
                    hint=f"create it, or check the URL ({self.scheme}://BUCKET/PREFIX)",
                ) from None
            return True
        doc = loads_json(data, name=name)
        version = doc.get("version") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or doc.get("format") != "labvault.objects" or type(version) is not int:
            raise ValidationError(f"{name} is not a labvault object store marker", hint="check the URL")
        if version > LAYOUT_VERSION:
            raise ValidationError(
                f"the object store {self.url} has layout version {version}, written by a newer labvault "
                f"(this one reads up to version {LAYOUT_VERSION})",
                hint="upgrade labvault (pip install -U labvault) on this machine",
            )
        return False

    def _ensure_marker(self) -> None:
        if self._marker_missing:
            doc = {"format": "labvault.objects", "version": LAYOUT_VERSION}
            self._write(f"{self.base}/{LAYOUT_MARKER}", json.dumps(doc, sort_keys=True).encode() + b"\n")
            self._marker_missing = False

    def path_of(self, digest: Digest) -> str:
        return f"{self.root}/{digest.hex[:2]}/{digest.hex[2:]}"

    def _pack_path(self, name: str, ext: str) -> str:
        return f"{self.packs_dir}/{name}.{ext}"

    # -- the packs readers see -----------------------------------------------------------------
    def refresh(self) -> None:
        """List ``packs/`` once: read the indexes not seen yet, forget packs that are gone."""
        with self._refresh_lock:
            try:
                listing = self._call("listing packs", self.fs.ls, self.packs_dir, detail=True)
            except FileNotFoundError:
                listing = []
            packs: dict[str, tuple[int, float]] = {}
            indexes: set[str] = set()
            for st in listing:
                leaf = str(st["name"]).rstrip("/").rsplit("/", 1)[-1]
                stem, _, ext = leaf.rpartition(".")
                if ext == "pack":
                    packs[stem] = (int(st.get("size") or 0), _mtime(st))
                elif ext == "idx":
                    indexes.add(stem)
            for known in [p for p in self.view.packs if p not in indexes]:
                self.view.drop(known)
                if self.cache is not None:
                    self.cache.drop_index(known)
            self._lost = sorted(i for i in indexes if i not in packs)
            self._orphans = {p: v for p, v in packs.items() if p not in indexes}
            for name in sorted(indexes - set(self.view.packs) - set(self._lost)):
                entries = self._read_index(name)
                if entries is not None:
                    self.view.add(name, packs[name][0], entries)
            self.view.listed_at = time.monotonic()

    def _read_index(self, name: str) -> list[tuple[bytes, int, int, float]] | None:
        cached = self.cache.get_index(name) if self.cache is not None else None
        if cached is not None:
            with suppress(ValidationError):  # a damaged cached copy is fetched again
                return decode_index(cached, name=name)
        try:
            data = self._call("reading a pack index", self.fs.cat_file, self._pack_path(name, "idx"))
        except FileNotFoundError:  # compacted away since the listing
            return None
        try:
            entries = decode_index(data, name=name)
        except ValidationError as exc:
            self.view.damaged[name] = str(exc)
            return None
        self.view.damaged.pop(name, None)
        if self.cache is not None:
            self.cache.put_index(name, data)
        return entries

    def _view(self) -> PackView:
        if self.view.listed_at == 0.0:
            self.refresh()
        return self.view

    # -- writes --------------------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Objects put inside the block are uploaded when it exits without error, discarded otherwise.

        A batch belongs to the thread that opened it. Small objects go into packs (uploaded as they
        fill, visible only once their index is uploaded at the end); larger ones wait in a spooled
        temp file each and are uploaded at the end.
        """
        current: _Batch | None = getattr(self._local, "batch", None)
        if current is None:
            current = self._local.batch = _Batch()
            if time.monotonic() - self.view.listed_at > 1.0:
                self.refresh()
        current.depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            current.depth -= 1
            if current.depth == 0:
                self._local.batch = None
                try:
                    if ok:
                        self._commit(current)
                finally:
                    for spool in current.loose.values():
                        spool.close()
                    if not ok:
                        self._discard(current)

    def _commit(self, batch: _Batch) -> None:
        try:
            if batch.staged or batch.loose:
                self._ensure_marker()
            for hexd, spool in batch.loose.items():
                spool.seek(0)
                self._write(self.path_of(Digest(hexd)), spool.read())
            if batch.builder is not None:
                self._upload_pack(batch, batch.builder)
                batch.builder = None
            now = time.time()
            for pack in batch.done:  # last: a pack is visible once its index is there
                entries = pack.entries(now)
                data = encode_index(entries)
                self._write(self._pack_path(pack.name, "idx"), data)
                self.view.add(pack.name, pack.size, entries)
                if self.cache is not None:
                    self.cache.put_index(pack.name, data)
        except BaseException:
            self._discard(batch)
            raise

    def _discard(self, batch: _Batch) -> None:
        """Remove the packs a failed batch uploaded (an index-less pack is invisible anyway)."""
        for pack in batch.done:
            if pack.name not in self.view.packs:
                with suppress(Exception):
                    self.fs.rm_file(self._pack_path(pack.name, "pack"))
        batch.done.clear()

    def _upload_pack(self, batch: _Batch, pack: PackBuilder) -> None:
        self._write(self._pack_path(pack.name, "pack"), bytes(pack.buffer))
        pack.size = len(pack.buffer)
        pack.buffer = bytearray()
        batch.done.append(pack)

    def _stage_packed(self, digest: bytes, data: bytes) -> None:
        batch: _Batch = self._local.batch
        if batch.builder is None:
            batch.builder = PackBuilder()
        batch.builder.append(digest, data)
        batch.staged.add(digest)
        if batch.builder.full():
            self._upload_pack(batch, batch.builder)
            batch.builder = None

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(hashlib.sha256(data).hexdigest())
        key = bytes.fromhex(digest.hex)
        with self.batch():
            batch: _Batch = self._local.batch
            if key in batch.staged or digest.hex in batch.loose:
                return digest
            loc = self._view().lookup(key)
            if loc is not None:
                if time.time() - loc.mtime > REFRESH_AFTER:
                    self._stage_packed(key, data)  # a fresh copy: gc's grace period starts over
            elif len(data) <= SMALL:
                self._stage_packed(key, data)
            elif not self._refresh_loose(digest):
                spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed by batch()
                spool.write(data)
                batch.loose[digest.hex] = spool
        return digest

    def _refresh_loose(self, digest: Digest, *, always: bool = False) -> bool:
        """True if ``digest`` is stored as a file of its own; restarts its age if old (or ``always``)."""
        path = self.path_of(digest)
        try:
            st = self._call("looking up an object", self.fs.info, path)
        except FileNotFoundError:
            return False
        if always or time.time() - _mtime(st) > REFRESH_AFTER:
            self._touch_file(path)
        return True

    def _touch_file(self, path: str) -> None:
        if self.scheme in ("s3", "s3a"):  # a copy onto itself with new metadata: server side, new LastModified
            with suppress(FileNotFoundError):
                self._call("refreshing an object", self.fs.setxattr, path, labvault_put=str(time.time()))
            return
        try:
            with suppress(FileNotFoundError):
                self._call("refreshing an object", self.fs.touch, path, truncate=False)
        except (NotImplementedError, ValueError):
            # Stores that cannot change a timestamp: writing the same bytes again is atomic there.
            with suppress(FileNotFoundError):
                self._write(path, self._call("refreshing an object", self.fs.cat_file, path))

    def put_file(self, path: Path) -> Digest:
        return self.put_bytes(Path(path).read_bytes())

    def put_stream(self, src: BinaryIO) -> Digest:
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            shutil.copyfileobj(src, spool)
            spool.seek(0)
            return self.put_bytes(spool.read())

    def touch(self, digest: Digest) -> None:
        """Restart an object's age: a packed one is packed again in this batch, a file is touched."""
        key = bytes.fromhex(digest.hex)
        with self.batch():
            if key in self._local.batch.staged:
                return
            loc = self._view().lookup(key)
            if loc is not None:
                with suppress(NotFound, IntegrityError):
                    self._stage_packed(key, self.get_bytes(digest))
                return
            self._refresh_loose(digest, always=True)

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
        data = self._fetch(digest, verify=verify)
        if self.cache is not None and (verify or hashlib.sha256(data).hexdigest() == digest.hex):
            self.cache.put(digest.hex, data)
        return data

    def _fetch(self, digest: Digest, *, verify: bool) -> bytes:
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
            return data
        raise self.not_found(digest)

    def _read_packed(self, key: bytes, loc: Location, *, verify: bool) -> bytes:
        whole = (
            self.cache is not None
            and loc.size < REMOTE_PACK_TARGET
            and self.view.packs.get(loc.pack, 0) * 4 <= self.cache.max_bytes
        )
        if whole:
            data = self._fetch_pack_into_cache(key, loc)
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
        if verify and hashlib.sha256(data).digest() != key:
            self._quarantine_packed(key.hex(), data)
            raise IntegrityError(f"object sha256:{key.hex()} at {self.url} is corrupt; moved to quarantine")
        return data

    def _fetch_pack_into_cache(self, key: bytes, loc: Location) -> bytes | None:
        """Download a whole pack once (one GET) and keep its sound records in the cache."""
        if self.cache is None:
            return None
        with self.view.lock:
            lock = self._pack_locks.setdefault(loc.pack, threading.Lock())
        with lock:
            cached = self.cache.get(key.hex())  # another thread fetched this pack meanwhile
            if cached is not None:
                return cached
            pack = self._call("downloading a pack", self.fs.cat_file, self._pack_path(loc.pack, "pack"))
            wanted = None
            for digest, where in self.view.digests_in(loc.pack):
                data = record_at(pack, where.offset, digest, where.size)
                if digest == key:
                    wanted = data
                elif data is not None and hashlib.sha256(data).digest() == digest:
                    self.cache.put(digest.hex(), data)
            return wanted

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
                self._fetch(digest, verify=True)
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
        return io.BytesIO(self.get_bytes(digest, verify=verify))

    def info(self, digest: Digest) -> ObjectInfo:
        key = bytes.fromhex(digest.hex)
        for attempt in range(2):
            loc = self._view().lookup(key)
            if loc is not None:
                return ObjectInfo(digest, loc.size, loc.mtime)
            try:
                st = self._call("looking up an object", self.fs.info, self.path_of(digest))
                return ObjectInfo(digest, int(st.get("size") or 0), _mtime(st))
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
                info = ObjectInfo(Digest(name), int(st.get("size") or 0), _mtime(st))
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
        replace_file(dest, self.get_bytes(digest, verify=True))  # verified before anything is written

    # -- deletion, corruption, maintenance ------------------------------------------------------
    def delete(self, digest: Digest) -> None:
        """Forget an object; a packed one leaves its pack (for every machine) at :meth:`compact`."""
        self._view().forget(bytes.fromhex(digest.hex))
        with suppress(FileNotFoundError):
            self._call("deleting an object", self.fs.rm_file, self.path_of(digest))
        if self.cache is not None:
            self.cache.remove(digest.hex)

    def compact(self) -> int:
        """Rewrite every pack that lost records here, drop killed uploads; the bytes reclaimed."""
        from labvault.storage.objects.remote_compact import compact

        return compact(self)

    def quarantine(self, digest: Digest) -> None:
        """Move a corrupt object aside so that it is never served again."""
        loc = self._view().lookup(bytes.fromhex(digest.hex))
        if loc is not None:
            with suppress(FileNotFoundError):
                data = record_at(self._pack_bytes(loc.pack), loc.offset, bytes.fromhex(digest.hex), loc.size)
                self._quarantine_packed(digest.hex, data or b"")
            return
        target = f"{self.base}/quarantine/{digest.hex}.{int(time.time() * 1000)}"
        with suppress(FileNotFoundError):
            if not self._atomic:
                self._call("quarantine", self.fs.makedirs, f"{self.base}/quarantine", exist_ok=True)
            self._call("quarantine", self.fs.mv, self.path_of(digest), target)
        self._quarantined.add(digest.hex)
        if self.cache is not None:
            self.cache.remove(digest.hex)

    def _quarantine_packed(self, hexd: str, data: bytes) -> None:
        self._write(f"{self.base}/quarantine/{hexd}.{int(time.time() * 1000)}", data)
        self.view.forget(bytes.fromhex(hexd))  # the next compaction leaves it out of its pack
        self._quarantined.add(hexd)
        if self.cache is not None:
            self.cache.remove(hexd)

    def not_found(self, digest: Digest) -> NotFound | IntegrityError:
        moved = digest.hex in self._quarantined or self._call(
            "lookup", self.fs.glob, f"{self.base}/quarantine/{digest.hex}.*"
        )
        if moved:
            return IntegrityError(f"object {digest} at {self.url} is corrupt: it was quarantined")
        return NotFound(f"object {digest} is not stored at {self.url}")

    def lost_packs(self) -> list[str]:
        self.refresh()
        return [f"{p}.pack" for p in self._lost]

    def check_packs(self) -> tuple[list[str], list[str]]:
        self.refresh()
        return sorted(self.view.damaged.values()), []

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _mtime(st: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "updated", "created", "last_modified"):
        value = st.get(key)
        if isinstance(value, int | float):
            return float(value)
        stamp = getattr(value, "timestamp", None)
        if callable(stamp):
            return float(stamp())
    return time.time()
