"""The write side of :class:`~labvault.storage.objects.local.LocalObjectStore` (a mixin): batches.

A batch holds the gc lock shared for as long as it is open. Small objects are appended to the thread's
pack and made durable by one ``fdatasync`` of it when the batch commits (``packs.py``); larger ones are
written to ``tmp/`` and renamed into place once durable (``loose.py``). Putting an object that is stored
already refreshes its age instead, so that a concurrent gc keeps it.

A batch belongs to the thread that opened it: a put from another thread is its own batch, durable
when it returns, and never discarded because someone else's batch failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from labvault.errors import NotFound, StorageError
from labvault.refs import Digest
from labvault.storage.locks import file_lock
from labvault.storage.objects import loose
from labvault.storage.objects.fileio import SMALL, copy_and_hash, stream_and_hash, write_all
from labvault.storage.objects.packs import PackStore
from labvault.storage.objects.tempfiles import TempFiles

__all__ = ["LocalWrites"]


class _Batch:
    """One thread's open batch: its depth, its staged temp files, its shared gc lock."""

    __slots__ = ("depth", "durable", "lock", "packed", "pending")

    def __init__(self, lock: AbstractContextManager[None]) -> None:
        self.depth = 0
        self.pending: dict[str, str] = {}  # digest hex -> temp file path
        self.packed: set[str] = set()  # digests appended to this thread's pack
        self.durable: set[str] = set()  # staged objects whose bytes were already flushed
        self.lock = lock


class LocalWrites:
    """Needs the store's packs, temp files, paths and the few methods declared here."""

    packs: PackStore
    temps: TempFiles
    gc_lock_path: Path
    _lock_timeout: float
    _local: threading.local
    _known_shards: set[str]
    _root_s: str
    _tmp_dir_s: str
    _error: Callable[[OSError, str], StorageError]
    _path_s: Callable[[str], str]

    # -- writes -------------------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        current: _Batch | None = getattr(self._local, "batch", None)
        if current is None:
            lock = file_lock(self.gc_lock_path, shared=True, timeout=self._lock_timeout, what="gc")
            lock.__enter__()
            current = self._local.batch = _Batch(lock)
            self.temps.sweep_once()
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
                        self._commit_packed()
                        self._commit_loose(current.pending, current.durable)
                    else:
                        self.packs.discard()
                        loose.discard(current.pending)
                finally:
                    current.lock.__exit__(None, None, None)

    def _commit_loose(self, pending: dict[str, str], durable: set[str]) -> None:
        try:
            loose.commit(self._root_s, self._tmp_dir_s, pending, durable, self._known_shards)
        except OSError as exc:
            loose.discard(pending)
            raise self._error(exc, "committing objects") from exc

    def _commit_packed(self) -> None:
        try:
            self.packs.commit()
        except BaseException as exc:
            self.packs.discard()
            if isinstance(exc, OSError):
                raise self._error(exc, "committing objects") from exc
            raise

    def _new_tmp(self) -> tuple[int, str]:
        try:
            return self.temps.new()
        except OSError as exc:
            raise self._error(exc, "creating a temp file") from exc

    def _refresh_if_stored(self, hexd: str) -> bool:
        """True if stored (or staged in this thread's batch); refreshes its age so gc keeps it."""
        current: _Batch | None = getattr(self._local, "batch", None)
        if current is not None and (hexd in current.packed or hexd in current.pending):
            return True
        if self.packs.lookup(hexd) is not None:
            self.packs.refresh(hexd)  # applied when the batch commits, still under the gc lock
            return True
        try:
            os.utime(self._path_s(hexd))
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error(exc, "refreshing an object") from exc

    def _stage(self, hexd: str, tmp: str) -> None:
        self._local.batch.pending[hexd] = tmp

    def put_bytes(self, data: bytes) -> Digest:
        hexd = hashlib.sha256(data).hexdigest()
        with self.batch():
            if self._refresh_if_stored(hexd):
                pass
            elif len(data) <= SMALL:
                try:
                    self.packs.append(hexd, data)
                except OSError as exc:
                    raise self._error(exc, "writing an object") from exc
                self._local.batch.packed.add(hexd)
            else:
                fd, tmp = self._new_tmp()
                try:
                    write_all(fd, data)
                except OSError as exc:
                    os.close(fd)
                    os.unlink(tmp)
                    raise self._error(exc, "writing an object") from exc
                os.close(fd)
                self._stage(hexd, tmp)
        return Digest(hexd)

    def put_file(self, path: Path) -> Digest:
        try:
            src = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file", hint="check the path") from None
        except OSError as exc:
            raise self._error(exc, f"reading {path}") from exc
        try:
            size = os.fstat(src).st_size
            if size <= SMALL:
                data = os.read(src, size + 1)
                if len(data) <= size:  # else it grew while we read it: take the streaming path
                    return self.put_bytes(data)
                os.lseek(src, 0, os.SEEK_SET)
            return self._put_fd(src)
        except OSError as exc:
            raise self._error(exc, f"reading {path}") from exc
        finally:
            os.close(src)

    def put_stream(self, src: BinaryIO) -> Digest:
        return self._put_with(lambda fd: stream_and_hash(src, fd))

    def _put_fd(self, src: int) -> Digest:
        return self._put_with(lambda fd: copy_and_hash(src, fd, durable=True), durable=True)

    def _put_with(self, fill: Callable[[int], str], *, durable: bool = False) -> Digest:
        with self.batch():
            fd, tmp = self._new_tmp()
            try:
                hexd = fill(fd)
            except BaseException as exc:
                os.close(fd)
                os.unlink(tmp)
                if isinstance(exc, OSError):
                    raise self._error(exc, "writing an object") from exc
                raise
            os.close(fd)
            if self._refresh_if_stored(hexd):
                os.unlink(tmp)
            else:
                self._stage(hexd, tmp)
                if durable:
                    self._local.batch.durable.add(hexd)
        return Digest(hexd)

    def adopt_temp(self, tmp: str, hexd: str) -> bool:
        """Rename a file of ``tmp/`` that hashes to ``hexd`` (the caller checked it) into place when the
        batch commits, its fsync paid then; False (and the file removed) if the object is stored."""
        with self.batch():
            if self._refresh_if_stored(hexd):
                os.unlink(tmp)
                return False
            os.chmod(tmp, 0o444)
            self._stage(hexd, tmp)
        return True

    def touch(self, digest: Digest) -> None:
        """Refresh an object's age so that gc keeps it for a full grace period (call inside ``batch()``)."""
        if self.packs.lookup(digest.hex) is not None:
            self.packs.refresh(digest.hex)
            return
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._path_s(digest.hex))
