"""Damaging stored objects behind the store's back, wherever they live (a pack or a file of their own)."""

from __future__ import annotations

import os

from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore


def corrupt_object(store: LocalObjectStore, digest: Digest, data: bytes) -> None:
    """Overwrite an object's stored bytes with ``data`` (same size for a packed object)."""
    path, offset, size = store.locate(digest)
    if store.is_packed(digest):
        assert len(data) == size, "a packed object is damaged in place: give bytes of the same size"
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        return
    os.chmod(path, 0o644)
    path.write_bytes(data)


def flip_byte(store: LocalObjectStore, digest: Digest) -> None:
    """Flip the last byte of an object in place (bit rot)."""
    path, offset, size = store.locate(digest)
    with open(path, "rb") as f:
        f.seek(offset + size - 1)
        last = f.read(1)
    mode = os.stat(path).st_mode
    os.chmod(path, 0o644)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes([last[0] ^ 0xFF]), offset + size - 1)
    finally:
        os.close(fd)
    os.chmod(path, mode & 0o7777)


def age_object(store: LocalObjectStore, digest: Digest, when: float) -> None:
    """Make an object look as if it was last put at ``when`` (for gc's grace period)."""
    if store.is_packed(digest):
        import sqlite3

        with sqlite3.connect(store.packs.index_path) as conn:
            conn.execute("UPDATE objects SET mtime = ? WHERE digest = ?", (when, bytes.fromhex(digest.hex)))
        return
    os.utime(store.path_of(digest), (when, when))


def flip_byte_at(path: str | os.PathLike[str], offset: int, mask: int = 0xFF) -> None:
    """XOR one byte of any file (an object, a pack, an index) with ``mask``; flipping twice restores it."""
    assert mask, "a zero mask changes nothing"
    mode = os.stat(path).st_mode
    os.chmod(path, 0o644)
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, offset)
        assert len(old) == 1, f"{path} has no byte at {offset}"
        os.pwrite(fd, bytes([old[0] ^ mask]), offset)
    finally:
        os.close(fd)
    os.chmod(path, mode & 0o7777)


def packed_records(store: LocalObjectStore, digests: list[Digest]) -> list[tuple[Digest, int, int]]:
    """``(digest, record start, record end)`` of packed objects in pack order (the record header included)."""
    from labvault.storage.objects.packfile import HEADER_SIZE

    spans = []
    for digest in digests:
        _, offset, size = store.locate(digest)
        spans.append((digest, offset - HEADER_SIZE, offset + size))
    return sorted(spans, key=lambda s: s[1])
