"""Low-level file I/O for the local object store: copy while hashing, write-behind, syncfs.

Kept apart from ``local.py`` so that the store reads as layout and rules, and this as mechanics.
Every function raises plain ``OSError``; the store translates it once.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["CHUNK", "copy_and_hash", "sha256_file", "stream_and_hash", "syncfs", "write_all"]

CHUNK = 8 * 1024 * 1024
_COPY_STEP = 64 * 1024 * 1024  # one copy_file_range call; the hashing thread follows step by step

_libc: Any
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syncfs  # noqa: B018 - probe: AttributeError where the call does not exist
except (OSError, AttributeError):  # not Linux: fall back to fsync per file
    _libc = None

HAVE_SYNCFS = _libc is not None
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
        view = view[os.write(fd, view) :]


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
    """Copy a readable stream to ``dst`` in one pass, hashing what is written."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    read = getattr(src, "readinto", None)
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
    return h.hexdigest()


def copy_and_hash(src: int, dst: int) -> str:
    """Copy ``src`` to ``dst`` (both fds at offset 0) in the kernel, hashing the bytes written.

    ``copy_file_range`` moves the data without passing it through Python; a second thread hashes
    ``dst`` right behind the copy (from the page cache), so the digest names exactly the bytes that
    were stored, and copying and hashing use both cores. Falls back to read/hash/write where the
    kernel cannot copy between these files.
    """
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
