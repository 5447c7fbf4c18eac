"""An object store whose writers and gc take a lock outside the store: the team vault's gc lock.

When the metadata is in PostgreSQL, many machines write to one object store; the store's own
lock file (if it has one) is seen by one machine only. This wrapper holds ``lock.shared()`` around
each outermost ``batch()`` and ``lock.exclusive()`` for ``gc_lock()``, then the store's own lock
inside it, and passes every other call through unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from labvault.entities import ObjectInfo
from labvault.refs import Digest
from labvault.storage.objects.protocol import MaterializeMode, ObjectStore

__all__ = ["GcLock", "LockedObjectStore"]


class GcLock(Protocol):
    def shared(self) -> AbstractContextManager[None]: ...

    def exclusive(self, *, timeout: float) -> AbstractContextManager[None]: ...


class LockedObjectStore:
    def __init__(self, inner: ObjectStore, lock: GcLock) -> None:
        self.inner = inner
        self.lock = lock
        self._local = threading.local()

    # -- the two locked entry points -----------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        with self.lock.shared():
            if depth == 0:
                # What the store knew before the lock may be stale: a gc on another machine can
                # have removed objects (and rewritten packs) in the meantime. Re-read its listing
                # now, so that an object is deduplicated only against what gc left in place.
                refresh = getattr(self.inner, "refresh", None)
                if callable(refresh):
                    refresh()
            self._local.depth = depth + 1
            try:
                with self.inner.batch():
                    yield
            finally:
                self._local.depth = depth

    @contextmanager
    def gc_lock(self, *, timeout: float) -> Iterator[None]:
        with self.lock.exclusive(timeout=timeout), self.inner.gc_lock(timeout=timeout):
            yield

    # -- writes open a batch, so they hold the shared lock --------------------------------------
    def put_bytes(self, data: bytes) -> Digest:
        with self.batch():
            return self.inner.put_bytes(data)

    def put_file(self, path: Path) -> Digest:
        with self.batch():
            return self.inner.put_file(path)

    def put_stream(self, src: BinaryIO) -> Digest:
        with self.batch():
            return self.inner.put_stream(src)  # type: ignore[attr-defined,no-any-return]

    def touch(self, digest: Digest) -> None:
        with self.batch():
            self.inner.touch(digest)

    # -- everything else passes through ----------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        return self.inner.has(digest)

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        return self.inner.open(digest, verify=verify)

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        return self.inner.get_bytes(digest, verify=verify)

    def info(self, digest: Digest) -> ObjectInfo:
        return self.inner.info(digest)

    def iter_objects(self) -> Iterator[ObjectInfo]:
        return self.inner.iter_objects()

    def delete(self, digest: Digest) -> None:
        self.inner.delete(digest)

    def resolve_prefix(self, prefix: str) -> Digest:
        return self.inner.resolve_prefix(prefix)

    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        self.inner.materialize(digest, dest, mode=mode)

    def verify(self, digest: Digest) -> bool:
        return self.inner.verify(digest)

    def compact(self) -> int:
        return self.inner.compact()

    def iter_temp_files(self) -> Iterator[tuple[Path, float]]:
        return self.inner.iter_temp_files()

    def lost_packs(self) -> list[str]:
        return self.inner.lost_packs()

    def check_packs(self) -> tuple[list[str], list[str]]:
        return self.inner.check_packs()

    def sweep_dead_temp_files(self, *, remove: bool) -> tuple[int, int]:
        return self.inner.sweep_dead_temp_files(remove=remove)

    def sweep_quarantine(self, *, cutoff: float | None, remove: bool) -> tuple[int, int]:
        return self.inner.sweep_quarantine(cutoff=cutoff, remove=remove)

    def __getattr__(self, name: str) -> Any:
        # Store-specific extras (close, path_of, url, cache statistics) of the wrapped store.
        return getattr(self.inner, name)
