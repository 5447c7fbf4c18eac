"""An object store on any fsspec filesystem (``s3://``, ``gs://``, ``az://``, ``memory://``, ``file://``),
shared by many machines at once.

Layout below the URL (the spec is docs/design/storage-format.md, *Remote object stores*)::

    labvault-objects.json           layout marker: {"format": "labvault.objects", "version": 1}
    packs/pack-<id>.pack            small objects put together, immutable (the local pack format)
    packs/pack-<id>.idx             its index, uploaded after it: the pack is visible once this exists
    objects/sha256/ab/cdef...       one object per larger object (over 1 MiB, or streamed)
    quarantine/<hex>.<ms>           corrupt objects set aside by a verifying read or fsck

A batch stages small objects in a pack in memory and uploads it as one object (a new pack each 16 MiB),
then its index, so 1,000 small files are a few PUTs (``remote_writes.py``). Readers discover packs by
listing ``packs/`` and reading the index objects they have not seen (kept in the local cache: they never
change). Reads go through a local read-through cache (``cache.py``) when the store has one
(``remote_reads.py``); deletions reach every machine when ``gc`` compacts the packs (``remote_compact.py``).
This module holds the store itself: its layout, its listing of packs, deletion and quarantine. fsspec is
imported here only, and every back-end error is translated once, in :meth:`FsspecObjectStore._call`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from labvault.errors import ExternalError, IntegrityError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.safeload import loads_json
from labvault.storage.objects.cache import ObjectCache
from labvault.storage.objects.protocol import BasicHousekeeping
from labvault.storage.objects.remote_errors import is_backend_error, missing_bucket, translate
from labvault.storage.objects.remote_packs import PackView, decode_index, record_at
from labvault.storage.objects.remote_reads import RemoteReads, stat_mtime
from labvault.storage.objects.remote_writes import RemoteWrites

__all__ = ["LAYOUT_MARKER", "LAYOUT_VERSION", "FsspecObjectStore"]


LAYOUT_MARKER = "labvault-objects.json"
LAYOUT_VERSION = 1
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}
_PACK_NAME = re.compile(r"pack-[0-9a-f]{1,32}-[0-9a-f]{8}")
_PACKAGES = {"s3": "'labvault[s3]'", "gs": "'labvault[gcs]'", "az": "adlfs", "abfs": "adlfs"}
_BUCKETS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


class FsspecObjectStore(RemoteWrites, RemoteReads, BasicHousekeeping):
    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path | None = None,
        cache_size: int = 0,
        refresh_after: float | None = None,
        **storage_options: Any,
    ) -> None:
        """``refresh_after``: re-putting an object last put longer ago than this (default 60 s) uploads
        it again so that gc's grace period starts over; a caller that keeps gc out for the whole write
        (a lock shared by writers, exclusive for gc) may raise it to avoid re-uploads."""
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
            package = _PACKAGES.get(self.scheme, f"the fsspec filesystem for {self.scheme}://")
            raise ExternalError(f"cannot open {url}: {exc}", hint=f"pip install {package}") from exc
        self.url = url
        self.base = base.rstrip("/")
        self.root = f"{self.base}/objects/sha256"
        self.packs_dir = f"{self.base}/packs"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._atomic = bool(set(protocols) & _ATOMIC_PUT)
        self._bucket = self.base.split("/", 1)[0] if self.scheme in _BUCKETS else None
        self.cache = ObjectCache(cache_dir, cache_size) if cache_dir is not None and cache_size > 0 else None
        self.view = PackView()
        self.refresh_after = refresh_after
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
        self._place(path, lambda to: self.fs.pipe_file(to, data))

    def _place(self, path: str, upload: Callable[[str], object]) -> None:
        """``upload(to)`` the object at ``path``: in place where an upload is atomic (S3: it appears
        only once complete), else to ``tmp/`` then moved, so that no partial object is ever seen."""
        if self._atomic:
            self._call("uploading objects", upload, path)
            return
        tmp = f"{self.base}/tmp/{time.time_ns():x}-{secrets.token_hex(8)}"
        self._call("uploading objects", self.fs.makedirs, f"{self.base}/tmp", exist_ok=True)
        self._call("uploading objects", upload, tmp)
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
                if not _PACK_NAME.fullmatch(stem):  # a name labvault never writes: not ours, left alone
                    continue
                if ext == "pack":
                    packs[stem] = (int(st.get("size") or 0), stat_mtime(st))
                elif ext == "idx":
                    indexes.add(stem)
            for known in [p for p in self.view.packs if p not in indexes]:
                self.view.drop(known)
                if self.cache is not None:
                    self.cache.drop_index(known)
                    self.cache.drop_pack(known)
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

    def describe(self) -> dict[str, Any]:
        """Where the objects are (the URL holds no credentials: the opener refuses those), the layout
        version, and the local cache's bound and use, for ``vault show``."""
        cache: dict[str, Any] | None = None
        if self.cache is not None:
            files, used = self.cache.usage()
            cache = {"path": str(self.cache.path), "size": self.cache.max_bytes, "used": used, "objects": files}
        return {"url": self.url, "layout_version": LAYOUT_VERSION, "cache": cache}

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
