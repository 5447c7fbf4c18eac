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

A batch belongs to the thread that opened it: a put from another thread is its own batch, durable
when it returns, and never discarded because someone else's batch failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, NoReturn

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, IntegrityError, NotFound, StorageError
from labvault.refs import Digest, parse_digest
from labvault.storage.locks import file_lock
from labvault.storage.objects import loose
from labvault.storage.objects.fileio import (
    CHUNK,
    SMALL,
    VerifyingReader,
    copy_and_hash,
    sha256_file,
    stream_and_hash,
    write_all,
)
from labvault.storage.objects.packcopy import Span, check_frames, plan_spans
from labvault.storage.objects.packs import PackStore
from labvault.storage.objects.protocol import MaterializeMode
from labvault.storage.objects.quarantine import quarantine_bytes, quarantine_file, quarantined_copy, sweep_quarantine
from labvault.storage.objects.tempfiles import TempFiles
from labvault.storage.objects.uploads import UploadSessions
from labvault.storage.space import translate_os_error

__all__ = ["LocalObjectStore"]


class _Batch:
    """One thread's open batch: its depth, its staged temp files, its shared gc lock."""

    __slots__ = ("depth", "durable", "lock", "packed", "pending")

    def __init__(self, lock: AbstractContextManager[None]) -> None:
        self.depth = 0
        self.pending: dict[str, str] = {}  # digest hex -> temp file path
        self.packed: set[str] = set()  # digests appended to this thread's pack
        self.durable: set[str] = set()  # staged objects whose bytes were already flushed
        self.lock = lock


class LocalObjectStore:
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

    # -- reads --------------------------------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        return self.packs.lookup(digest.hex) is not None or os.path.isfile(self._path_s(digest.hex))

    def info(self, digest: Digest) -> ObjectInfo:
        packed = self.packs.lookup(digest.hex)
        if packed is not None:
            return ObjectInfo(digest, packed[2], packed[3])
        try:
            st = os.stat(self._path_s(digest.hex))
        except FileNotFoundError:
            raise self.not_found(digest) from None
        return ObjectInfo(digest, st.st_size, st.st_mtime)

    def locate(self, digest: Digest) -> tuple[Path, int, int]:
        """Where an object's bytes are: ``(file, offset, size)``; a loose object is a whole file."""
        packed = self.packs.locate(digest.hex)
        if packed is not None:
            return packed
        path = self.path_of(digest)
        try:
            return path, 0, path.stat().st_size
        except FileNotFoundError:
            raise self.not_found(digest) from None

    def is_packed(self, digest: Digest) -> bool:
        return self.packs.lookup(digest.hex) is not None

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        data = self.packs.read(digest.hex)
        if data is not None:
            if not verify:
                return io.BytesIO(data)
            return io.BufferedReader(VerifyingReader(io.BytesIO(data), digest.hex, lambda: self.refuse_corrupt(digest)))  # type: ignore[return-value]
        try:
            raw = open(self._path_s(digest.hex), "rb", buffering=0)  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise self.not_found(digest) from None
        if not verify:
            return io.BufferedReader(raw, CHUNK)  # type: ignore[return-value]
        reader = VerifyingReader(raw, digest.hex, lambda: self.refuse_corrupt(digest))
        return io.BufferedReader(reader, CHUNK)  # type: ignore[return-value]

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        data = self.packs.read(digest.hex)
        if data is None:
            try:
                with open(self._path_s(digest.hex), "rb", buffering=0) as f:
                    data = f.read()
            except FileNotFoundError:
                raise self.not_found(digest) from None
        if verify and hashlib.sha256(data).hexdigest() != digest.hex:
            self.refuse_corrupt(digest)
        return data

    def verify(self, digest: Digest) -> bool:
        """Re-hash a stored object; False (and quarantined) if its bytes do not match its name."""
        try:
            data = self.packs.read(digest.hex)
        except IntegrityError:  # its pack record is lost, recorded as damage: nothing left to quarantine
            return False
        if data is not None:
            actual = hashlib.sha256(data).hexdigest()
        else:
            try:
                actual = sha256_file(self._path_s(digest.hex))
            except FileNotFoundError:
                raise self.not_found(digest) from None
        if actual != digest.hex:
            self.quarantine(digest)
            return False
        return True

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every stored object, in digest order."""
        packed = [ObjectInfo(Digest(h), size, mtime) for h, size, mtime in self.packs.rows()]
        yield from heapq.merge(packed, loose.iter_objects(self.root), key=lambda i: i.digest.hex)

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        if ref.is_full:
            return Digest(ref.prefix)
        matches = sorted(loose.with_prefix(self.root, ref.prefix) | set(self.packs.with_prefix(ref.prefix)))
        if not matches:
            moved = sorted({p.name.partition(".")[0] for p in self.quarantine_dir.glob(f"{ref.prefix}*.*")})
            if len(moved) == 1:
                raise self.not_found(Digest(moved[0]))
            raise NotFound(f"no object matches sha256:{ref.prefix}", hint="list objects with `labvault object ls`")
        if len(matches) > 1:
            raise AmbiguousReference(f"sha256:{ref.prefix}", [f"sha256:{m}" for m in matches])
        return Digest(matches[0])

    def delete(self, digest: Digest) -> None:
        """Forget an object; a packed object's space is reclaimed by :meth:`compact`."""
        self.packs.delete(digest.hex)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path_s(digest.hex))

    def touch(self, digest: Digest) -> None:
        """Refresh an object's age so that gc keeps it for a full grace period (call inside ``batch()``)."""
        if self.packs.lookup(digest.hex) is not None:
            self.packs.refresh(digest.hex)
            return
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._path_s(digest.hex))

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
