"""The local object store: a sharded directory of immutable files named by sha256.

Layout (see docs/design/storage-format.md)::

    objects/sha256/ab/cdef0123...   the object's raw bytes, read-only
    tmp/                            temp files on the same filesystem; renamed into place when durable
    quarantine/                     corrupt objects moved aside by a verifying read or fsck
    locks/gc.lock                   writers hold it shared, gc exclusive

Durability is paid per batch, not per object: inside ``batch()`` objects are written to ``tmp/``,
one ``syncfs`` makes all their bytes durable, then they are renamed into place and a second
``syncfs`` makes the renames durable. A reader never sees a partial object.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, IntegrityError, NotFound, StorageError
from labvault.refs import Digest, parse_digest
from labvault.storage.locks import file_lock
from labvault.storage.objects.protocol import MaterializeMode

__all__ = ["LocalObjectStore", "sha256_file"]

_CHUNK = 8 * 1024 * 1024
_SMALL = 1024 * 1024  # files up to this size are read whole: one read, hash, skip the write if stored
_FICLONE = 0x40049409  # linux/fs.h: ioctl to share extents (reflink) on btrfs, xfs, ...

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syncfs = _libc.syncfs
except (OSError, AttributeError):  # not Linux: fall back to fsync per file
    _libc = None


def _storage_error(exc: OSError, action: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"disk full while {action}", hint="free some space, then run the command again")
    if exc.errno == errno.EDQUOT:
        return StorageError(f"disk quota exceeded while {action}", hint="free some space or raise the quota")
    return StorageError(f"{action} failed: {exc.strerror or exc}", hint="check the disk and the vault's permissions")


def sha256_file(path: Path) -> Digest:
    """Hash a file without storing it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return Digest(h.hexdigest())


class _VerifyingReader(io.RawIOBase):
    """Hashes what is read; at end of file a mismatch quarantines the object and raises."""

    def __init__(self, raw: BinaryIO, digest: Digest, on_corrupt: Callable[[Digest], None]) -> None:
        self._raw = raw
        self._digest = digest
        self._hash = hashlib.sha256()
        self._on_corrupt = on_corrupt
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._hash.update(memoryview(b)[:n])
        elif not self._done:
            self._done = True
            if self._hash.hexdigest() != self._digest.hex:
                self._on_corrupt(self._digest)
        return int(n or 0)

    def close(self) -> None:
        self._raw.close()
        super().close()


class LocalObjectStore:
    """Content-addressed objects in a local directory."""

    def __init__(self, vault_dir: Path, *, lock_timeout: float = 120.0) -> None:
        self.vault_dir = vault_dir
        self.root = vault_dir / "objects" / "sha256"
        self.tmp_dir = vault_dir / "tmp"
        self.quarantine_dir = vault_dir / "quarantine"
        self.gc_lock_path = vault_dir / "locks" / "gc.lock"
        self._lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._depth = 0
        self._pending: dict[str, Path] = {}
        self._lock_cm: AbstractContextManager[None] | None = None
        self._known_shards: set[str] = set()

    # -- layout -------------------------------------------------------------------------------
    @classmethod
    def create(cls, vault_dir: Path) -> LocalObjectStore:
        for sub in ("objects/sha256", "tmp", "quarantine", "locks"):
            (vault_dir / sub).mkdir(parents=True, exist_ok=True)
        return cls(vault_dir)

    def path_of(self, digest: Digest) -> Path:
        return self.root / digest.hex[:2] / digest.hex[2:]

    # -- writes -------------------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._mutex:
            outer = self._depth == 0
            if outer:
                lock = file_lock(self.gc_lock_path, shared=True, timeout=self._lock_timeout, what="gc")
                lock.__enter__()
                self._lock_cm = lock
            self._depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._mutex:
                self._depth -= 1
                if self._depth == 0:
                    pending, self._pending = self._pending, {}
                    lock_cm, self._lock_cm = self._lock_cm, None
                    try:
                        if ok:
                            self._commit(pending)
                        else:
                            for tmp in pending.values():
                                tmp.unlink(missing_ok=True)
                    finally:
                        if lock_cm is not None:
                            lock_cm.__exit__(None, None, None)

    def _commit(self, pending: dict[str, Path]) -> None:
        if not pending:
            return
        try:
            self._sync(list(pending.values()))  # the bytes first...
            for hexd, tmp in pending.items():
                self._ensure_shard(hexd[:2])
                os.replace(tmp, self.root / hexd[:2] / hexd[2:])
            self._sync_dirs({self.root / h[:2] for h in pending})  # ...then the names
        except OSError as exc:
            for tmp in pending.values():
                tmp.unlink(missing_ok=True)
            raise _storage_error(exc, "committing objects") from exc

    def _sync(self, files: list[Path]) -> None:
        if _libc is not None:
            self._syncfs(self.tmp_dir)
            return
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _sync_dirs(self, dirs: set[Path]) -> None:
        if _libc is not None:
            self._syncfs(self.root)
            return
        for d in (*dirs, self.root):
            _fsync_dir(d)

    @staticmethod
    def _syncfs(on: Path) -> None:
        fd = os.open(on, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    def _ensure_shard(self, shard: str) -> None:
        if shard not in self._known_shards:
            (self.root / shard).mkdir(exist_ok=True)
            self._known_shards.add(shard)

    def _new_tmp(self) -> tuple[int, Path]:
        path = self.tmp_dir / f"obj-{os.getpid()}-{secrets.token_hex(8)}"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), path

    def _refresh_if_stored(self, digest: Digest) -> bool:
        """True if stored (or pending in this batch); refreshes its age so gc keeps it."""
        if digest.hex in self._pending:
            return True
        try:
            os.utime(self.path_of(digest))
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(exc, "refreshing an object") from exc

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(hashlib.sha256(data).hexdigest())
        with self.batch():
            if self._refresh_if_stored(digest):
                return digest
            fd, tmp = self._new_tmp()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise _storage_error(exc, "writing an object") from exc
            os.close(fd)
            self._stage(digest, tmp)
        return digest

    def put_file(self, path: Path) -> Digest:
        try:
            with open(path, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                if size <= _SMALL:
                    return self.put_bytes(src.read())
                return self._put_stream(src)
        except OSError as exc:
            raise _storage_error(exc, f"reading {path}") from exc

    def put_stream(self, src: BinaryIO) -> Digest:
        return self._put_stream(src)

    def _put_stream(self, src: BinaryIO) -> Digest:
        h = hashlib.sha256()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        with self.batch():
            fd, tmp = self._new_tmp()
            try:
                while n := src.readinto(buf):  # type: ignore[attr-defined]
                    h.update(view[:n])
                    out = view[:n]
                    while out:
                        out = out[os.write(fd, out) :]
            except OSError as exc:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise _storage_error(exc, "writing an object") from exc
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
            os.close(fd)
            digest = Digest(h.hexdigest())
            if self._refresh_if_stored(digest):
                tmp.unlink(missing_ok=True)
            else:
                self._stage(digest, tmp)
        return digest

    def _stage(self, digest: Digest, tmp: Path) -> None:
        with self._mutex:
            self._pending[digest.hex] = tmp

    # -- reads --------------------------------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        return self.path_of(digest).is_file()

    def info(self, digest: Digest) -> ObjectInfo:
        try:
            st = os.stat(self.path_of(digest))
        except FileNotFoundError:
            raise self._not_found(digest) from None
        return ObjectInfo(digest, st.st_size, st.st_mtime)

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        try:
            raw = open(self.path_of(digest), "rb", buffering=0)  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise self._not_found(digest) from None
        if not verify:
            return io.BufferedReader(raw, _CHUNK)  # type: ignore[arg-type,return-value]
        reader = _VerifyingReader(raw, digest, self._corrupt)  # type: ignore[arg-type]
        return io.BufferedReader(reader, _CHUNK)  # type: ignore[return-value]

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        try:
            data = self.path_of(digest).read_bytes()
        except FileNotFoundError:
            raise self._not_found(digest) from None
        if verify and hashlib.sha256(data).hexdigest() != digest.hex:
            self._corrupt(digest)
        return data

    def verify(self, digest: Digest) -> bool:
        """Re-hash a stored object; False (and quarantined) if its bytes do not match its name."""
        try:
            actual = sha256_file(self.path_of(digest))
        except FileNotFoundError:
            raise self._not_found(digest) from None
        if actual != digest:
            self.quarantine(digest)
            return False
        return True

    def iter_objects(self) -> Iterator[ObjectInfo]:
        try:
            shards = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and len(e.name) == 2)
        except FileNotFoundError:
            return
        for shard in shards:
            for entry in os.scandir(self.root / shard):
                name = shard + entry.name
                if len(name) != 64:
                    continue
                st = entry.stat()
                yield ObjectInfo(Digest(name), st.st_size, st.st_mtime)

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        if ref.is_full:
            return Digest(ref.prefix)
        shard = self.root / ref.prefix[:2]
        rest = ref.prefix[2:]
        try:
            matches = sorted(ref.prefix[:2] + n for n in os.listdir(shard) if n.startswith(rest))
        except FileNotFoundError:
            matches = []
        if not matches:
            raise NotFound(f"no object matches sha256:{ref.prefix}", hint="list objects with `labvault object ls`")
        if len(matches) > 1:
            raise AmbiguousReference(f"sha256:{ref.prefix}", [f"sha256:{m}" for m in matches])
        return Digest(matches[0])

    def delete(self, digest: Digest) -> None:
        self.path_of(digest).unlink(missing_ok=True)

    # -- materialise --------------------------------------------------------------------------
    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        """Write verified bytes to ``dest`` atomically; a hardlink or reflink shares the object's blocks.

        ``reflink`` falls back to a copy where the filesystem cannot share extents.
        """
        src = self.path_of(digest)
        tmp = dest.parent / f".{dest.name}.labvault-{secrets.token_hex(4)}"
        try:
            if mode == "hardlink":
                if not self.verify(digest):
                    self._corrupt(digest)
                os.link(src, tmp)
            elif mode == "reflink" and self._try_reflink(digest, tmp):
                pass
            else:
                self._copy_verified(digest, tmp)
            os.replace(tmp, dest)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            if not src.exists():
                raise self._not_found(digest) from None
            raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _storage_error(exc, f"writing {dest}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _copy_verified(self, digest: Digest, tmp: Path) -> None:
        h = hashlib.sha256()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        with open(self.path_of(digest), "rb", buffering=0) as src, open(tmp, "wb", buffering=0) as out:
            while n := src.readinto(buf):
                h.update(view[:n])
                out.write(view[:n])
        if h.hexdigest() != digest.hex:
            tmp.unlink(missing_ok=True)
            self._corrupt(digest)

    def _try_reflink(self, digest: Digest, tmp: Path) -> bool:
        if not self.verify(digest):
            self._corrupt(digest)
        with open(self.path_of(digest), "rb") as src, open(tmp, "wb") as out:
            try:
                fcntl.ioctl(out.fileno(), _FICLONE, src.fileno())
                return True
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                    tmp.unlink(missing_ok=True)
                    return False
                raise

    # -- corruption ---------------------------------------------------------------------------
    def quarantine(self, digest: Digest) -> Path:
        """Move an object aside so that it is never served again."""
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / f"{digest.hex}.{int(time.time())}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path_of(digest), target)
        return target

    def _corrupt(self, digest: Digest) -> None:
        self.quarantine(digest)
        raise IntegrityError(f"object {digest} is corrupt (its bytes no longer match its hash); quarantined")

    def _not_found(self, digest: Digest) -> NotFound:
        return NotFound(f"object {digest} is not stored", hint="list objects with `labvault object ls`")

    # -- maintenance helpers ------------------------------------------------------------------
    def iter_temp_files(self) -> Iterator[tuple[Path, float]]:
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                yield Path(entry.path), entry.stat().st_mtime
            except FileNotFoundError:
                continue


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
