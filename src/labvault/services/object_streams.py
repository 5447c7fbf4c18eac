"""Large objects through the team server. Received ones are stored in one pass: hashed while they are written to the
store's own temp file, then made durable (once) and renamed into place, only when they hash to the
digest the client named. Nothing is spooled elsewhere first, and nothing is hashed twice.

An upload that hashes to anything else raises inside the store's batch, so the batch discards its
temp file: nothing is stored, not even under the digest the bytes really have. Composing chunks
reads them without verifying each one: the digest of the whole covers every byte, and only when it
does not match are the chunks checked one by one, so that a corrupt chunk is quarantined and the
client's resume sends it again. Whole objects are sent in large blocks, verified as they are read.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import BinaryIO

from labvault.errors import CheckFailed, NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.transfer import MAX_CHUNKS, parse_full_digest
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["compose_chunks", "read_object", "store_upload"]

_READ = 8 << 20


class _Blocks:
    """A readable stream over a source of blocks (``b""`` at the end), counting what passes."""

    def __init__(self, blocks: Callable[[], bytes]) -> None:
        self._next = blocks
        self.size = 0
        self._done = False

    def read(self, size: int | None = -1) -> bytes:
        if self._done:
            return b""
        if size is not None and size >= 0:
            block = self._next()
            self.size += len(block)
            self._done = not block
            return block
        parts = []  # everything left (stores without streaming puts read the whole object)
        while block := self._next():
            parts.append(block)
        self._done = True
        data = b"".join(parts)
        self.size += len(data)
        return data


def _put_stream(objects: ObjectStore, src: _Blocks) -> Digest:
    put = getattr(objects, "put_stream", None)
    if put is not None:
        digest: Digest = put(src)
        return digest
    return objects.put_bytes(src.read())


def store_upload(objects: ObjectStore, claimed: Digest, blocks: Callable[[], bytes]) -> tuple[Digest, bool, int]:
    """Store the bytes ``blocks()`` yields (``b""`` at the end) if they hash to ``claimed``;
    ``(digest, created, size)``. Re-sending a stored object refreshes it, so a concurrent gc keeps it."""
    existed = objects.has(claimed)
    src = _Blocks(blocks)
    with objects.batch():  # an error inside discards the temp file: nothing is stored
        got = _put_stream(objects, src)
        if got != claimed:
            raise CheckFailed(
                f"the uploaded bytes hash to {got}, not {claimed}; nothing was stored",
                hint="send the object again; it was corrupted on the way",
            )
    return claimed, not existed, src.size


def compose_chunks(objects: ObjectStore, claimed: Digest, chunks: Sequence[str]) -> tuple[Digest, bool, int]:
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

    def read_all() -> Generator[bytes, None, None]:
        for digest in parsed:
            with objects.open(digest, verify=False) as src:
                yield from _blocks_of(src)

    source = read_all()
    try:
        return store_upload(objects, claimed, lambda: next(source, b""))
    except CheckFailed:
        corrupt = [str(d) for d in dict.fromkeys(parsed) if not objects.verify(d)]
        if not corrupt:
            raise
        raise CheckFailed(
            f"{len(corrupt)} chunk(s) were corrupt in the store and are quarantined, the first {corrupt[0]}; "
            "nothing was stored",
            hint="upload the missing chunks (POST /api/v1/objects/missing lists them), then compose again",
        ) from None
    finally:
        source.close()


def _blocks_of(src: BinaryIO) -> Iterator[bytes]:
    while block := src.read(_READ):
        yield block


def read_object(objects: ObjectStore, digest: Digest, *, verify: bool = True) -> Iterator[bytes]:
    """A whole object in large blocks, verified as it is read (a corrupt one is quarantined and refused)
    unless ``verify`` is False: for a reader that hashes what it gets itself."""
    with objects.open(digest, verify=verify) as src:
        yield from _blocks_of(src)
