"""An object store on any fsspec filesystem (``s3://``, ``gs://``, ``memory://``, ``file://`` ...).

Same layout as the local store below the URL: ``<url>/objects/sha256/ab/cdef…``. On object stores
(S3, GCS, Azure, memory) a single upload is atomic, so objects are written in place; on filesystems
with partial writes they go to ``<url>/tmp/`` first and are moved into place. fsspec is imported here
only, so the rest of labvault never pays for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, ExternalError, IntegrityError, NotFound
from labvault.refs import Digest, parse_digest
from labvault.storage.contained import replace_file
from labvault.storage.objects.protocol import BasicHousekeeping, MaterializeMode

__all__ = ["FsspecObjectStore"]

_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}


class FsspecObjectStore(BasicHousekeeping):
    def __init__(self, url: str, *, cache_dir: Path | None = None, cache_size: int = 0, **storage_options: Any) -> None:
        try:
            import fsspec
            from fsspec.core import url_to_fs
        except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
            raise ExternalError("fsspec is not installed", hint="pip install fsspec") from exc
        del fsspec
        try:
            self.fs, base = url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            scheme = url.split("://", 1)[0]
            raise ExternalError(
                f"cannot open {url}: {exc}", hint=f"install the filesystem for {scheme}:// (e.g. labvault[s3])"
            ) from exc
        self.url = url
        self.base = base.rstrip("/")
        self.root = f"{self.base}/objects/sha256"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._atomic = bool(set(protocols) & _ATOMIC_PUT)
        self._local = threading.local()

    def path_of(self, digest: Digest) -> str:
        return f"{self.root}/{digest.hex[:2]}/{digest.hex[2:]}"

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Objects put inside the block are uploaded when it exits without error, discarded otherwise.

        A batch belongs to the thread that opened it, as in the local store. Pending objects wait in
        a spooled temp file each (memory up to 8 MiB, then disk).
        """
        local = self._local
        if getattr(local, "depth", 0) == 0:
            local.depth = 0
            local.pending = {}
        local.depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            local.depth -= 1
            if local.depth == 0:
                pending: dict[str, Any] = local.pending
                local.pending = {}
                try:
                    if ok:
                        for hexd, spool in pending.items():
                            spool.seek(0)
                            self._upload(Digest(hexd), spool.read())
                finally:
                    for spool in pending.values():
                        spool.close()

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ExternalError(f"{action} on {self.url} failed: {exc}", hint="check the URL and credentials") from exc

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(hashlib.sha256(data).hexdigest())
        with self.batch():
            pending = self._local.pending
            if digest.hex not in pending and not self.has(digest):
                spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed by batch()
                spool.write(data)
                pending[digest.hex] = spool
        return digest

    def _upload(self, digest: Digest, data: bytes) -> None:
        if self.has(digest):
            return
        target = self.path_of(digest)
        if self._atomic:
            self._call("upload", self.fs.pipe_file, target, data)
        else:
            tmp = f"{self.base}/tmp/{secrets.token_hex(8)}"
            self._call("upload", self.fs.makedirs, f"{self.base}/tmp", exist_ok=True)
            self._call("upload", self.fs.pipe_file, tmp, data)
            self._call("upload", self.fs.makedirs, f"{self.root}/{digest.hex[:2]}", exist_ok=True)
            self._call("upload", self.fs.mv, tmp, target)

    def put_file(self, path: Path) -> Digest:
        return self.put_bytes(Path(path).read_bytes())

    def put_stream(self, src: BinaryIO) -> Digest:
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            shutil.copyfileobj(src, spool)
            spool.seek(0)
            return self.put_bytes(spool.read())

    def has(self, digest: Digest) -> bool:
        return bool(self._call("lookup", self.fs.exists, self.path_of(digest)))

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        try:
            data: bytes = self._call("download", self.fs.cat_file, self.path_of(digest))
        except FileNotFoundError:
            if self._call("lookup", self.fs.glob, f"{self.base}/quarantine/{digest.hex}.*"):
                raise IntegrityError(f"object {digest} at {self.url} is corrupt: it was quarantined") from None
            raise NotFound(f"object {digest} is not stored at {self.url}") from None
        if verify and hashlib.sha256(data).hexdigest() != digest.hex:
            self.quarantine(digest)
            raise IntegrityError(f"object {digest} at {self.url} is corrupt; moved to quarantine")
        return data

    def verify(self, digest: Digest) -> bool:
        try:
            self.get_bytes(digest)
        except IntegrityError:
            return False
        return True

    def touch(self, digest: Digest) -> None:
        path = self.path_of(digest)
        try:
            self._call("touch", self.fs.touch, path, truncate=False)
        except FileNotFoundError:
            return
        except (NotImplementedError, ValueError):
            # Object stores (S3, GCS, memory) cannot change a timestamp: writing the same bytes
            # again is atomic there and gives the object a new modification time.
            if self._atomic:
                with suppress(FileNotFoundError):
                    self._call("touch", self.fs.pipe_file, path, self._call("touch", self.fs.cat_file, path))

    def quarantine(self, digest: Digest) -> None:
        """Move a corrupt object aside so that it is never served again."""
        target = f"{self.base}/quarantine/{digest.hex}.{int(time.time() * 1000)}"
        with contextlib.suppress(FileNotFoundError):
            self._call("quarantine", self.fs.makedirs, f"{self.base}/quarantine", exist_ok=True)
            self._call("quarantine", self.fs.mv, self.path_of(digest), target)

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        return io.BytesIO(self.get_bytes(digest, verify=verify))

    def info(self, digest: Digest) -> ObjectInfo:
        try:
            st = self._call("lookup", self.fs.info, self.path_of(digest))
        except FileNotFoundError:
            raise NotFound(f"object {digest} is not stored at {self.url}") from None
        return ObjectInfo(digest, int(st.get("size") or 0), _mtime(st))

    def iter_objects(self) -> Iterator[ObjectInfo]:
        try:
            found = self._call("listing", self.fs.find, self.root, detail=True)
        except FileNotFoundError:
            return
        for path, st in sorted(found.items()):
            parts = path.rstrip("/").split("/")
            name = parts[-2] + parts[-1] if len(parts) >= 2 else ""
            if len(name) == 64 and len(parts[-2]) == 2:
                yield ObjectInfo(Digest(name), int(st.get("size") or 0), _mtime(st))

    def delete(self, digest: Digest) -> None:
        with suppress(FileNotFoundError):
            self._call("delete", self.fs.rm_file, self.path_of(digest))

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        if ref.is_full:
            return Digest(ref.prefix)
        shard = f"{self.root}/{ref.prefix[:2]}"
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._call("listing", self.fs.ls, shard, detail=False)]
        except FileNotFoundError:
            names = []
        matches = sorted(ref.prefix[:2] + n for n in names if n.startswith(ref.prefix[2:]))
        if not matches:
            raise NotFound(f"no object matches sha256:{ref.prefix} at {self.url}")
        if len(matches) > 1:
            raise AmbiguousReference(f"sha256:{ref.prefix}", [f"sha256:{m}" for m in matches])
        return Digest(matches[0])

    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        replace_file(dest, self.get_bytes(digest, verify=True))  # verified before anything is written


def _mtime(st: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "updated", "created"):
        value = st.get(key)
        if isinstance(value, int | float):
            return float(value)
        stamp = getattr(value, "timestamp", None)
        if callable(stamp):
            return float(stamp())
    return time.time()
