"""Objects sent to and read from the team server: named by full digest only; which are missing (a
resumed upload sends only those); byte ranges of a stored one. Uploads and composed chunks are
stored by ``services.object_streams``. Chunks are referenced by nothing, so ``gc`` collects them
after its grace period.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import BinaryIO

from labvault.errors import ValidationError
from labvault.refs import Digest, parse_digest
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["MAX_CHUNKS", "missing_objects", "parse_full_digest", "read_range"]

MAX_CHUNKS = 100_000
_BLOCK = 1 << 20


def parse_full_digest(text: str) -> Digest:
    """``sha256:<64 hex>`` or the bare 64 hex digits: objects are addressed by full digest only."""
    ref = parse_digest(text, allow_prefix=False)
    return Digest(ref.prefix)


def missing_objects(objects: ObjectStore, digests: Sequence[str]) -> list[str]:
    """Which of ``digests`` the store does not have (a resumed upload sends only those)."""
    if len(digests) > MAX_CHUNKS:
        raise ValidationError(f"{len(digests)} digests in one request; the limit is {MAX_CHUNKS}", hint="ask in parts")
    parsed = [parse_full_digest(d) for d in digests]
    return [str(d) for d in parsed if not objects.has(d)]


def read_range(objects: ObjectStore, digest: Digest, start: int, end: int, *, verify: bool = True) -> Iterator[bytes]:
    """Bytes ``start..end`` (inclusive) of an object, in blocks. A whole object is verified as it is
    read (a corrupt one is quarantined and refused) unless ``verify`` is False (a reader that hashes it
    itself); a range is checked by the client's own hash."""
    whole = verify and start == 0 and end == objects.info(digest).size - 1
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
