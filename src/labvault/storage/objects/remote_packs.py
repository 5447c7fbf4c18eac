"""Packs in a remote object store: the index object format, building packs, and the reader's view.

See docs/design/storage-format.md (*Remote object stores*). A remote pack uses the local pack format
(``packfile.py``: ``LVPACK2\\n`` then ``LVOB | sha256 | size | bytes`` records) and is immutable once
uploaded. It becomes visible only when its index object is uploaded after it::

    b"LVIDX1\\n\\0", then one entry per record: sha256 (32 bytes) | offset of its bytes (u64 LE) |
    size (u64 LE) | mtime (f64 LE, Unix seconds when it was put), then the sha256 of all of the above

An index object is untrusted input (another machine wrote it): :func:`decode_index` checks its length,
its checksum and every entry before anything uses it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from labvault.errors import ValidationError
from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.packfile import HEADER, HEADER_SIZE, PACK_MAGIC, RECORD_MAGIC

__all__ = [
    "INDEX_MAGIC",
    "REMOTE_PACK_TARGET",
    "Entry",
    "Location",
    "PackBuilder",
    "PackView",
    "decode_index",
    "encode_index",
    "new_pack_name",
    "record_at",
]

INDEX_MAGIC = b"LVIDX1\n\0"
_ENTRY = struct.Struct("<32sQQd")
REMOTE_PACK_TARGET = 16 * 1024 * 1024  # a batch uploads a pack each time this much is staged
_MAX_INDEX = 64 * 1024 * 1024  # far above what a 16 MiB pack of tiny records needs

Entry = tuple[bytes, int, int, float]  # digest, offset, size, mtime


def new_pack_name() -> str:
    return f"pack-{time.time_ns():x}-{secrets.token_hex(4)}"


def encode_index(entries: list[Entry]) -> bytes:
    body = INDEX_MAGIC + b"".join(_ENTRY.pack(*e) for e in entries)
    return body + hashlib.sha256(body).digest()


def decode_index(data: bytes, *, name: str) -> list[Entry]:
    """The entries of an index object, each checked; a ValidationError naming it if any is wrong."""

    def bad(why: str) -> ValidationError:
        return ValidationError(f"pack index {name} is damaged: {why}", hint="run `labvault fsck`")

    if len(data) > _MAX_INDEX or len(data) < len(INDEX_MAGIC) + 32:
        raise bad(f"{len(data)} bytes")
    body, check = data[:-32], data[-32:]
    if not body.startswith(INDEX_MAGIC):
        raise bad("not a labvault pack index")
    if hashlib.sha256(body).digest() != check:
        raise bad("its checksum does not match")
    if (len(body) - len(INDEX_MAGIC)) % _ENTRY.size:
        raise bad("truncated entry")
    entries = list(_ENTRY.iter_unpack(body[len(INDEX_MAGIC) :]))
    floor = len(PACK_MAGIC) + HEADER_SIZE
    for digest, offset, size, mtime in entries:
        if offset < floor or size > SMALL or not math.isfinite(mtime):
            raise bad(f"entry for sha256:{digest.hex()} is out of range")
    return entries


def record_at(data: bytes, offset: int, digest: bytes, size: int) -> bytes | None:
    """The bytes of the record at ``offset`` of a pack (or of a slice starting at its header)
    if its header names ``digest`` and ``size``; None otherwise (the index is wrong there)."""
    start = offset - HEADER_SIZE
    if start < 0 or offset + size > len(data):
        return None
    if HEADER.unpack_from(data, start) != (RECORD_MAGIC, digest, size):
        return None
    return data[offset : offset + size]


class PackBuilder:
    """One batch's pack being filled in memory: its bytes and the entries of its records."""

    def __init__(self) -> None:
        self.name = new_pack_name()
        self.buffer = bytearray(PACK_MAGIC)
        self.records: list[tuple[bytes, int, int]] = []  # digest, offset, size
        self.digests: set[bytes] = set()
        self.size = 0  # once uploaded (its buffer is then freed)

    def append(self, digest: bytes, data: bytes) -> None:
        self.buffer += HEADER.pack(RECORD_MAGIC, digest, len(data))
        self.records.append((digest, len(self.buffer), len(data)))
        self.buffer += data
        self.digests.add(digest)

    def full(self) -> bool:
        return len(self.buffer) >= REMOTE_PACK_TARGET

    def entries(self, mtime: float) -> list[Entry]:
        return [(d, off, size, mtime) for d, off, size in self.records]


class Location(NamedTuple):  # a tuple: a reader makes one per record of every pack it lists
    pack: str
    offset: int
    size: int
    mtime: float


@dataclass
class PackView:
    """What a reader knows of the remote packs: which index objects it read, where each object is.

    Shared by the threads of one store; every method takes the lock. ``deleted`` holds the records
    deleted here that the next :meth:`FsspecObjectStore.compact` removes from their packs for everyone.
    """

    packs: dict[str, int] = field(default_factory=dict)  # pack name -> pack size (bytes)
    where: dict[bytes, dict[str, Location]] = field(default_factory=dict)
    deleted: dict[str, set[bytes]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # index name -> why it cannot be read
    listed_at: float = 0.0  # monotonic time of the last listing
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add(self, pack: str, size: int, entries: list[Entry]) -> None:
        with self.lock:
            self.packs[pack] = size
            gone = self.deleted.get(pack, set())
            for digest, offset, length, mtime in entries:
                if digest not in gone:
                    self.where.setdefault(digest, {})[pack] = Location(pack, offset, length, mtime)

    def drop(self, pack: str) -> None:
        with self.lock:
            self.packs.pop(pack, None)
            self.deleted.pop(pack, None)
            for digest in [d for d, locs in self.where.items() if pack in locs]:
                locs = self.where[digest]
                del locs[pack]
                if not locs:
                    del self.where[digest]

    def lookup(self, digest: bytes) -> Location | None:
        """The newest copy of an object (the latest put), or None."""
        with self.lock:
            locs = self.where.get(digest)
            return max(locs.values(), key=lambda loc: loc.mtime) if locs else None

    def forget(self, digest: bytes) -> list[str]:
        """Delete an object here (every copy); the packs that held it, for compaction."""
        with self.lock:
            locs = self.where.pop(digest, {})
            for pack in locs:
                self.deleted.setdefault(pack, set()).add(digest)
            return list(locs)

    def objects(self) -> list[tuple[bytes, int, float]]:
        """``(digest, size, newest mtime)`` of every packed object, in digest order."""
        with self.lock:
            out = []
            for digest, locs in self.where.items():
                newest = max(locs.values(), key=lambda loc: loc.mtime)
                out.append((digest, newest.size, newest.mtime))
        return sorted(out)

    def live_in(self, pack: str) -> list[Location]:
        with self.lock:
            return [locs[pack] for locs in self.where.values() if pack in locs]

    def digests_in(self, pack: str) -> list[tuple[bytes, Location]]:
        with self.lock:
            return [(d, locs[pack]) for d, locs in self.where.items() if pack in locs]
