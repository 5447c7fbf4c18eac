"""The write side of :class:`~labvault.storage.objects.remote.FsspecObjectStore` (a mixin): batches.

A batch stages small objects in a pack in memory and uploads it as one object (a new pack each
16 MiB), then its index last, so that the pack is visible only once it is whole; larger objects wait
in a local temp file each and are uploaded whole at the end. Re-putting an object last put long ago
uploads it again (or touches its file), so that gc's grace period starts over. fsspec is not imported
here: the store's filesystem is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from labvault.storage.objects.cache import ObjectCache
from labvault.storage.objects.fileio import CHUNK, SMALL
from labvault.storage.objects.remote_packs import PackBuilder, PackView, encode_index
from labvault.storage.objects.remote_reads import stat_mtime
from labvault.storage.space import translate_os_error

__all__ = ["REFRESH_AFTER", "RemoteWrites"]

REFRESH_AFTER = 60.0  # a re-put of an object last put longer ago than this uploads it again (gc's grace)


def _temp_file() -> Any:
    """An anonymous local temp file (removed when closed) for a larger object waiting for its upload."""
    return tempfile.NamedTemporaryFile(prefix="labvault-upload-")


class _Batch:
    __slots__ = ("builder", "depth", "done", "loose", "staged")

    def __init__(self) -> None:
        self.depth = 0
        self.builder: PackBuilder | None = None
        self.done: list[PackBuilder] = []  # packs uploaded, their index not yet
        self.loose: dict[str, Any] = {}  # hex -> an anonymous temp file holding a larger object
        self.staged: set[bytes] = set()


class RemoteWrites:
    """Needs the store's filesystem, view, cache and the few methods declared here."""

    fs: Any
    base: str
    scheme: str
    cache: ObjectCache | None
    view: PackView
    refresh_after: float | None
    _atomic: bool
    _local: threading.local
    _call: Callable[..., Any]
    _write: Callable[[str, bytes], None]
    _place: Callable[[str, Callable[[str], object]], None]
    _ensure_marker: Callable[[], None]
    _pack_path: Callable[[str, str], str]
    path_of: Callable[[Digest], str]
    refresh: Callable[[], None]
    _view: Callable[[], PackView]
    get_bytes: Callable[..., bytes]

    # -- writes --------------------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Objects put inside the block are uploaded when it exits without error, discarded otherwise.

        A batch belongs to the thread that opened it. Small objects go into packs (uploaded as they
        fill, visible only once their index is uploaded at the end); larger ones wait in a local
        temp file each and are uploaded (streamed, multipart where the store has it) at the end.
        """
        current: _Batch | None = getattr(self._local, "batch", None)
        if current is None:
            if time.monotonic() - self.view.listed_at > 1.0:
                self.refresh()  # before the batch exists: a failed listing leaves no batch behind
            current = self._local.batch = _Batch()
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
                spool.flush()
                self._upload_file(self.path_of(Digest(hexd)), spool.name)
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
                if time.time() - loc.mtime > self._refresh_after():
                    self._stage_packed(key, data)  # a fresh copy: gc's grace period starts over
            elif len(data) <= SMALL:
                self._stage_packed(key, data)
            elif not self._refresh_loose(digest):
                spool = _temp_file()
                spool.write(data)
                batch.loose[digest.hex] = spool
        return digest

    def _stage_loose(self, digest: Digest, spool: Any) -> None:
        """Stage a larger object already in a local temp file (the batch closes it)."""
        with self.batch():
            batch: _Batch = self._local.batch
            if (
                digest.hex in batch.loose
                or self._view().lookup(bytes.fromhex(digest.hex)) is not None
                or self._refresh_loose(digest)
            ):
                spool.close()
            else:
                batch.loose[digest.hex] = spool

    def _upload_file(self, path: str, local: str) -> None:
        """Upload a local file whole (multipart on S3: the object appears only once it is complete)."""
        self._place(path, lambda to: self.fs.put_file(local, to))

    def _refresh_loose(self, digest: Digest, *, always: bool = False) -> bool:
        """True if ``digest`` is stored as a file of its own; restarts its age if old (or ``always``)."""
        path = self.path_of(digest)
        try:
            st = self._call("looking up an object", self.fs.info, path)
        except FileNotFoundError:
            return False
        if always or time.time() - stat_mtime(st) > self._refresh_after():
            self._touch_file(path)
        return True

    def _refresh_after(self) -> float:
        return REFRESH_AFTER if self.refresh_after is None else self.refresh_after

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
        try:
            with open(path, "rb", buffering=0) as src:
                if os.fstat(src.fileno()).st_size <= SMALL:
                    data = src.read(SMALL + 1)
                    if len(data) <= SMALL:  # else it grew while we read it: stream it
                        return self.put_bytes(data)
                    src.seek(0)
                return self.put_stream(src)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file", hint="check the path") from None
        except OSError as exc:
            raise translate_os_error(exc, Path(path).parent, f"reading {path}") from exc

    def put_stream(self, src: BinaryIO) -> Digest:
        """Hash while copying to a local temp file (never whole in memory), then stage it."""
        spool = _temp_file()
        try:
            hasher = hashlib.sha256()
            size = 0
            while chunk := src.read(CHUNK):
                hasher.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            digest = Digest(hasher.hexdigest())
            if size <= SMALL:
                spool.seek(0)
                data = spool.read()
                spool.close()
                return self.put_bytes(data)
        except BaseException:
            spool.close()
            raise
        self._stage_loose(digest, spool)
        return digest

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
