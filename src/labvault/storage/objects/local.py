"""The local object store: small objects in packs, larger ones as files named by sha256.

Layout (see docs/design/storage-format.md)::

    objects/packs/                  objects up to 1 MiB, appended to pack files (see ``packs.py``)
    objects/sha256/ab/cdef0123...   a larger object's raw bytes, read-only
    tmp/                            temp files on the same filesystem; renamed into place when durable
    quarantine/                     corrupt objects moved aside by a verifying read or fsck
    locks/gc.lock                   writers hold it shared, gc exclusive

Durability is paid per batch, not per object: small objects are appended to the thread's pack
and made durable by one ``fdatasync`` of it (``packs.py``); larger ones are written to ``tmp/``
and renamed into place once durable (``loose.py``). A reader never sees a partial object.

Batches and puts are in ``local_writes.py``, reads in ``local_reads.py``. This module holds the store
itself: its layout, deletion and compaction, transfers between two local stores, materialising,
quarantine and the maintenance helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NoReturn

from labvault.errors import IntegrityError, NotFound, StorageError
from labvault.refs import Digest
from labvault.storage.locks import file_lock
from labvault.storage.objects.local_reads import LocalReads
from labvault.storage.objects.local_writes import LocalWrites
from labvault.storage.objects.packcopy import Span, check_frames, plan_spans
from labvault.storage.objects.packs import PackStore
from labvault.storage.objects.protocol import MaterializeMode
from labvault.storage.objects.quarantine import quarantine_bytes, quarantine_file, quarantined_copy, sweep_quarantine
from labvault.storage.objects.tempfiles import TempFiles
from labvault.storage.objects.uploads import UploadSessions
from labvault.storage.space import translate_os_error

__all__ = ["LocalObjectStore"]


class LocalObjectStore(LocalWrites, LocalReads):
    """Content-addressed objects in a local directory."""

    def __init__(self, vault_dir: Path, *, lock_timeout: float = 120.0) -> None:
        self.vault_dir = vault_dir
        self.root = vault_dir / "objects" / "sha256"
        self.tmp_dir = vault_dir / "tmp"
        self.quarantine_dir = vault_dir / "quarantine"
        self.packs = PackStore(vault_dir / "objects" / "packs", self.quarantine_dir)
        self.gc_lock_path = vault_dir / "locks" / "gc.lock"
        self._lock_timeout = lock_timeout
        self._local = threading.local()
        self._known_shards: set[str] = set()
        self.temps = TempFiles(self.tmp_dir)
        self.upload_sessions = UploadSessions(self)
        # Plain strings on the hot path: pathlib costs more than the syscalls for small objects.
        self._root_s = str(self.root)
        self._tmp_dir_s = str(self.tmp_dir)

    def _error(self, exc: OSError, action: str) -> StorageError:
        return translate_os_error(exc, self.vault_dir, action)

    # -- layout -------------------------------------------------------------------------------
    @classmethod
    def create(cls, vault_dir: Path) -> LocalObjectStore:
        for sub in ("objects/sha256", "objects/packs", "tmp", "quarantine", "locks"):
            (vault_dir / sub).mkdir(parents=True, exist_ok=True)
        return cls(vault_dir)

    def path_of(self, digest: Digest) -> Path:
        return self.root / digest.hex[:2] / digest.hex[2:]

    def _path_s(self, hexd: str) -> str:
        return f"{self._root_s}/{hexd[:2]}/{hexd[2:]}"

    # -- deletion -----------------------------------------------------------------------------
    def delete(self, digest: Digest) -> None:
        """Forget an object; a packed object's space is reclaimed by :meth:`compact`."""
        self.packs.delete(digest.hex)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path_s(digest.hex))

    def compact(self) -> int:
        """Rewrite packs that are mostly deleted objects; the bytes reclaimed. Hold the gc lock exclusively."""

        def intact(hexd: str, data: bytes) -> bool:
            if hashlib.sha256(data).hexdigest() == hexd:
                return True
            self._quarantine_bytes(hexd, data)
            return False

        try:
            return self.packs.compact(verify=intact)
        except OSError as exc:
            raise self._error(exc, "compacting packs") from exc

    # -- transfers between two local stores (packcopy.py) ----------------------------------------
    def packed_spans(self, digests: Sequence[Digest]) -> tuple[list[Span], list[Digest]]:
        """The pack spans holding the packed ones of ``digests``, and the others (``packcopy.plan_spans``)."""
        return plan_spans(self.packs, digests)

    def read_span(self, span: Span) -> bytes | None:
        """A span's bytes, unverified (short if its pack was cut), or None if its pack is gone."""
        return self.packs.read_span(span.pack, span.start, span.stop - span.start)

    def put_framed(self, frames: bytes, span: Span) -> list[Digest]:
        """Store the sound records of a span another local store read; returns the digests of the others
        (not stored: a wrong header, or bytes that do not hash to their digest)."""
        runs, bad = check_frames(frames, span)
        view = memoryview(frames)
        with self.batch():
            for start, stop, records in runs:
                try:
                    self.packs.append_framed(view[start:stop], records)
                except OSError as exc:
                    raise self._error(exc, "writing an object") from exc
                self._local.batch.packed.update(digest.hex() for digest, _, _ in records)
        return [Digest(digest.hex()) for digest in bad]

    def lacking(self, digests: Sequence[Digest]) -> list[Digest]:
        """Those of ``digests`` that are not stored: packed ones looked up together, loose ones by file."""
        packed = self.packs.lookup_many([bytes.fromhex(d.hex) for d in digests])
        try:
            shards = set(os.listdir(self._root_s))
        except FileNotFoundError:
            shards = set()
        return [
            d
            for d in digests
            if bytes.fromhex(d.hex) not in packed and not (d.hex[:2] in shards and os.path.isfile(self._path_s(d.hex)))
        ]

    # -- materialise --------------------------------------------------------------------------
    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        """Write verified bytes to ``dest`` atomically; a hardlink or reflink shares the object's blocks.

        ``reflink`` falls back to a copy where the filesystem cannot share extents, and both
        ``hardlink`` and ``reflink`` copy a packed object (it has no file of its own).
        """
        from labvault.storage.objects.materialize import materialize

        try:
            materialize(self, digest, dest, mode)
        except OSError as exc:
            raise translate_os_error(exc, dest.parent, f"writing {dest}") from exc

    # -- corruption ---------------------------------------------------------------------------
    def quarantine(self, digest: Digest) -> Path:
        """Move an object aside so that it is never served again."""
        data = self.packs.read(digest.hex)
        if data is not None:
            return self._quarantine_bytes(digest.hex, data)
        return quarantine_file(self.quarantine_dir, digest.hex, self.path_of(digest))

    def _quarantine_bytes(self, hexd: str, data: bytes) -> Path:
        """Copy a packed object's bytes aside, then forget it (its space goes at the next compaction)."""
        target = quarantine_bytes(self.quarantine_dir, hexd, data)
        self.packs.delete(hexd)
        return target

    def refuse_corrupt(self, digest: Digest) -> NoReturn:
        """Quarantine an object found corrupt and raise the integrity error (exit 5)."""
        self.quarantine(digest)
        raise IntegrityError(f"object {digest} is corrupt (its bytes no longer match its hash); quarantined")

    def not_found(self, digest: Digest) -> NotFound | IntegrityError:
        """Not stored (exit 3), or corrupt (exit 5) if a verifying read or fsck quarantined it."""
        moved = quarantined_copy(self.quarantine_dir, digest.hex)
        if moved is not None:
            return IntegrityError(
                f"object {digest} is corrupt: it was quarantined to {moved}",
                hint="restore it from another copy of the vault, then run `labvault fsck`",
            )
        return NotFound(f"object {digest} is not stored", hint="list objects with `labvault object ls`")

    def close(self) -> None:
        """Let go of the packs this store writes to, its index connections and its temp-file lock."""
        self.packs.close_all()
        self.temps.close()

    # -- maintenance helpers ------------------------------------------------------------------
    def gc_lock(self, *, timeout: float) -> AbstractContextManager[None]:
        return file_lock(self.gc_lock_path, timeout=timeout, what="the object store (a writer)")

    def lost_packs(self) -> list[str]:
        return self.packs.lost + [n for n, size, _ in self.packs.pack_files() if size < 0]

    def check_packs(self) -> tuple[list[str], list[str]]:
        return self.packs.check()

    def sweep_dead_temp_files(self, *, remove: bool) -> tuple[int, int]:
        return self.temps.sweep(remove=remove)

    def sweep_quarantine(self, *, cutoff: float | None, remove: bool) -> tuple[int, int]:
        try:
            return sweep_quarantine(self.quarantine_dir, cutoff=cutoff, remove=remove)
        except OSError as exc:
            raise self._error(exc, "clearing the quarantine") from exc

    def iter_temp_files(self) -> Iterator[tuple[Path, float]]:
        """Entries of ``tmp/`` that no writer's lock names (an older labvault's, an import's staging,
        an upload session)."""
        return self.temps.others()
