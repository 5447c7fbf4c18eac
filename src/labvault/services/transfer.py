"""Objects sent to and read from the team server: verified by digest end to end, named by digest only.

An upload names the digest it claims; its bytes are hashed as they arrive and refused (nothing is
stored) when they hash to anything else. A large object is sent as chunks, each an object of its
own, then composed: the server streams the chunks in order through sha256 and stores the whole
only when it matches. A client resumes by asking which chunks are missing. Chunks are referenced
by nothing, so ``gc`` collects them after its grace period.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, BinaryIO

from labvault.errors import CheckFailed, NotFound, ValidationError
from labvault.refs import Digest, parse_digest
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["MAX_CHUNKS", "Spool", "compose_object", "missing_objects", "parse_full_digest", "read_range", "store_spool"]

MAX_CHUNKS = 100_000
_BLOCK = 1 << 20
#: Kept in memory up to this size, then in an anonymous temp file (no name: nothing to clean up).
_SPOOL_MEMORY = 8 << 20


def parse_full_digest(text: str) -> Digest:
    """``sha256:<64 hex>`` or the bare 64 hex digits: objects are addressed by full digest only."""
    ref = parse_digest(text, allow_prefix=False)
    return Digest(ref.prefix)


class Spool:
    """The bytes of one upload as they arrive, hashed on the way in."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115 - closed by close()
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hasher.update(data)
        self.file.write(data)
        self.size += len(data)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _put_stream(objects: ObjectStore, src: BinaryIO) -> Digest:
    put = getattr(objects, "put_stream", None)
    if put is not None:
        digest: Digest = put(src)
        return digest
    return objects.put_bytes(src.read())  # a store without streaming puts (memory, tests)


def store_spool(objects: ObjectStore, claimed: Digest, spool: Spool) -> tuple[Digest, bool]:
    """Store an upload if it hashes to ``claimed``; ``(digest, created)``. Re-sending a stored object
    is a no-op that refreshes it (as every put does), so a concurrent gc keeps it."""
    got = spool.hasher.hexdigest()
    if got != claimed.hex:
        raise CheckFailed(
            f"the uploaded bytes hash to sha256:{got}, not {claimed}; nothing was stored",
            hint="send the object again; it was corrupted on the way",
        )
    existed = objects.has(claimed)
    spool.file.seek(0)
    with objects.batch():
        stored = _put_stream(objects, spool.file)  # type: ignore[arg-type]
    if stored != claimed:  # the store read other bytes than we hashed: never record a wrong name
        raise CheckFailed(f"the object store hashed the upload as {stored}, not {claimed}", hint="send it again")
    return claimed, not existed


def missing_objects(objects: ObjectStore, digests: Sequence[str]) -> list[str]:
    """Which of ``digests`` the store does not have (a resumed upload sends only those)."""
    if len(digests) > MAX_CHUNKS:
        raise ValidationError(f"{len(digests)} digests in one request; the limit is {MAX_CHUNKS}", hint="ask in parts")
    parsed = [parse_full_digest(d) for d in digests]
    return [str(d) for d in parsed if not objects.has(d)]


def compose_object(objects: ObjectStore, claimed: Digest, chunks: Sequence[str]) -> tuple[Digest, bool, int]:
    """Store the concatenation of ``chunks`` (stored objects) as ``claimed``; ``(digest, created, size)``."""
    if not chunks or len(chunks) > MAX_CHUNKS:
        raise ValidationError(f"compose takes 1 to {MAX_CHUNKS} chunks, not {len(chunks)}", hint="list the chunks")
    parsed = [parse_full_digest(c) for c in chunks]
    missing = [str(d) for d in parsed if not objects.has(d)]
    if missing:
        raise NotFound(
            f"{len(missing)} chunk(s) are not stored, the first {missing[0]}",
            hint="upload the missing chunks (POST /api/v1/objects/missing lists them), then compose again",
        )
    spool = Spool()
    try:
        for digest in parsed:
            with objects.open(digest, verify=True) as src:
                while block := src.read(_BLOCK):
                    spool.write(block)
        stored, created = store_spool(objects, claimed, spool)
        return stored, created, spool.size
    finally:
        spool.close()


def read_range(objects: ObjectStore, digest: Digest, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start..end`` (inclusive) of an object, in blocks. A whole object is verified as it is
    read (a corrupt one is quarantined and refused); a range is checked by the client's own hash."""
    whole = start == 0 and end == objects.info(digest).size - 1
    with objects.open(digest, verify=whole) as src:
        if start:
            _skip(src, start)
        left = end - start + 1
        while left > 0:
            block = src.read(min(_BLOCK, left))
            if not block:
                break
            left -= len(block)
            yield block


def _skip(src: BinaryIO, count: int) -> None:
    try:
        src.seek(count)
    except (OSError, ValueError):  # a stream that cannot seek: read through
        while count > 0:
            block = src.read(min(_BLOCK, count))
            if not block:
                return
            count -= len(block)
