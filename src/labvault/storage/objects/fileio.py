"""Low-level file I/O for the local object store: copy while hashing, write-behind, syncfs.

Kept apart from ``local.py`` so that the store reads as layout and rules, and this as mechanics.
Every function raises plain ``OSError``; the store translates it once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "CHUNK",
    "SMALL",
    "WRITE_SLICE",
    "VerifyingReader",
    "copy_and_hash",
    "copy_hashed",
    "pwrite_all",
    "reflink",
    "sha256_file",
    "start_writeback",
    "stream_and_hash",
    "syncfs",
    "write_all",
]

CHUNK = 8 * 1024 * 1024
SMALL = 1024 * 1024  # files up to this size are read whole: one read, hash, write
# The most one write(2) is handed: on the machines measured, writing 4 MiB at once into the page
# cache took about 8x the CPU time of writing the same bytes 256 KiB at a time.
WRITE_SLICE = 256 * 1024
_FICLONE = 0x40049409  # linux/fs.h: ioctl to share extents (reflink) on btrfs, xfs, ...
_COPY_STEP = 64 * 1024 * 1024  # one copy_file_range call; the hashing thread follows step by step

_libc: Any
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syncfs  # noqa: B018 - probe: AttributeError where the call does not exist
except (OSError, AttributeError):  # not Linux: fall back to fsync per file
    _libc = None

HAVE_SYNCFS = _libc is not None
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of the range, do not wait for it
_write_behind: Any = getattr(_libc, "sync_file_range", None) if _libc is not None else None
if _write_behind is not None:
    _write_behind.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
# Copy errors that mean "this pair of files cannot use copy_file_range": fall back to read/write.
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}


def syncfs(on: Path | str) -> None:
    """Make everything written to the filesystem holding ``on`` durable (one call, not one per file)."""
    fd = os.open(on, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_SLICE]) :]


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (the file position does not move)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view[:WRITE_SLICE], offset)
        view, offset = view[n:], offset + n


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing back what was just written (not waiting for it), so that a later fsync has little
    left to do; a hint, a no-op where the kernel has no ``sync_file_range``."""
    if _write_behind is not None:
        _write_behind(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file, read in large chunks."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def stream_and_hash(src: BinaryIO, dst: int) -> str:
    """Copy a readable stream to ``dst`` in one pass, hashing what is written.

    Each block's writeback starts as soon as it is written (write-behind): the disk works while the
    next block arrives, and the fsync that makes the object durable has little left to wait for.
    Without it the kernel holds gigabytes dirty until that fsync, then writes them all at once.
    """
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    read = getattr(src, "readinto", None)
    offset = 0
    while True:
        if read is not None:
            n = read(buf)
            chunk = view[:n] if n else b""
        else:
            chunk = src.read(CHUNK)
            n = len(chunk)
        if not n:
            break
        h.update(chunk)
        write_all(dst, chunk)
        start_writeback(dst, offset, n)
        offset += n
    return h.hexdigest()


def copy_and_hash(src: int, dst: int, *, durable: bool = True) -> str:
    """Copy ``src`` to ``dst`` (both at offset 0, ``dst`` readable) in the kernel, hashing the bytes written.

    ``copy_file_range`` moves the data without passing it through Python; a second thread hashes
    ``dst`` right behind the copy (from the page cache), so the digest names exactly the bytes that
    were stored, and copying and hashing use both cores. Falls back to read/hash/write where the
    kernel cannot copy between these files.
    """
    with contextlib.suppress(OSError):  # larger read-ahead on a cold source, as cp(1) asks for
        os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    try:
        first = os.copy_file_range(src, dst, _COPY_STEP)
    except OSError as exc:
        if exc.errno not in _NO_COPY_RANGE:
            raise
        with os.fdopen(src, "rb", buffering=0, closefd=False) as stream:
            return stream_and_hash(stream, dst)
    h = hashlib.sha256()
    state = {"copied": first, "done": first == 0}
    cond = threading.Condition()
    failure: list[BaseException] = []

    def follow() -> None:
        hashed = 0
        try:
            while True:
                with cond:
                    while state["copied"] <= hashed and not state["done"]:
                        cond.wait()
                    limit, done = state["copied"], state["done"]
                if limit > hashed:
                    # Hash through a read-only mapping: no copy into a Python buffer, which costs
                    # as much as the hash itself at these sizes.
                    start = hashed - hashed % mmap.ALLOCATIONGRANULARITY
                    with mmap.mmap(dst, limit - start, prot=mmap.PROT_READ, offset=start) as mapped:
                        view = memoryview(mapped)
                        try:
                            h.update(view[hashed - start :])
                        finally:
                            view.release()
                    hashed = limit
                if done:
                    return
        except BaseException as exc:  # handed to the copying thread, which re-raises it
            failure.append(exc)

    hasher = threading.Thread(target=follow, name="labvault-hash", daemon=True)
    hasher.start()
    try:
        offset = 0
        n = first
        while n:
            offset += n
            with cond:
                state["copied"] = offset
                cond.notify()
            n = os.copy_file_range(src, dst, _COPY_STEP)
        if durable:
            # While the other thread finishes hashing, make this big object's bytes durable: the
            # batch's syncfs then has little left to write.
            os.fdatasync(dst)
    finally:
        with cond:
            state["done"] = True
            cond.notify()
        hasher.join()
    if failure:
        raise failure[0]
    return h.hexdigest()


def copy_hashed(src: int, dst: int, size: int) -> str:
    """Copy ``src`` to ``dst`` (not made durable: a checkout, not an object) and hash what was written."""
    if size <= SMALL:
        data = os.read(src, size + 1)
        if len(data) <= size:
            write_all(dst, data)
            return hashlib.sha256(data).hexdigest()
        os.lseek(src, 0, os.SEEK_SET)
        os.ftruncate(dst, 0)
    return copy_and_hash(src, dst, durable=False)


def reflink(src: int, dst: int) -> bool:
    """Share ``src``'s extents with ``dst``; False where the filesystem cannot (ext4, tmpfs...)."""
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return True
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            return False
        raise


class VerifyingReader(io.RawIOBase):
    """Hashes what is read; at end of file a mismatch calls ``on_mismatch`` (which raises)."""

    def __init__(self, raw: io.FileIO | io.BytesIO, expected_hex: str, on_mismatch: Callable[[], None]) -> None:
        self._raw = raw
        self._expected = expected_hex
        self._hash = hashlib.sha256()
        self._on_mismatch = on_mismatch
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._raw.readinto(b)
        if n:
            self._hash.update(memoryview(b)[:n])
        elif not self._done:
            self._done = True
            if self._hash.hexdigest() != self._expected:
                self._raw.close()  # closed before the object is moved to quarantine
                self._on_mismatch()
        return int(n or 0)

    def close(self) -> None:
        self._raw.close()
        super().close()
