"""Objects between vaults: walk what records point at, send what the other side lacks, verify on arrival.

Trees are read from the sending side without its own verification (which would quarantine, that is
write, in a vault we only read) and hashed here instead: a tree or file whose bytes do not match
its name is refused (exit 5) naming it, and what came with it in that worker's batch is dropped.
Each worker thread holds its own batch on the receiving store, so durability is paid once a batch.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO

from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from labvault.storage.objects.packcopy import Span, SpanStore
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import decode_tree

__all__ = ["CopyStats", "copy_objects", "reachable"]

_BIG = 64 << 20  # objects above this stream through a temp file instead of memory
_CHUNK = 1024  # objects per work item: one batch commit (one fdatasync of a pack) each
_CHUNK_BYTES = 8 << 20  # bytes of pack spans per work item, likewise


@dataclass(slots=True)
class CopyStats:
    objects: int = 0
    bytes: int = 0
    present: int = 0  # already on the receiving side


def _read_checked(store: ObjectStore, digest: Digest, where: str) -> bytes:
    try:
        data = store.get_bytes(digest, verify=False)
    except NotFound:
        raise IntegrityError(f"object {digest} is missing on {where}", hint=f"run `labvault fsck` on {where}") from None
    if hashlib.sha256(data).hexdigest() != digest.hex:
        raise IntegrityError(
            f"object {digest} on {where} is corrupt (its bytes do not match its name)",
            hint=f"run `labvault fsck` on {where}; nothing was recorded here",
        )
    return data


def reachable(store: ObjectStore, roots: Iterable[tuple[Digest, str]], where: str) -> list[Digest]:
    """Every object reachable from ``roots`` (blobs and trees, trees decoded and checked), each once."""
    seen: set[str] = set()
    out: list[Digest] = []
    stack: list[Digest] = []
    for digest, kind in roots:
        if digest.hex in seen:
            continue
        seen.add(digest.hex)
        out.append(digest)
        if kind == "tree":
            stack.append(digest)
    while stack:
        tree = stack.pop()
        for entry in decode_tree(_read_checked(store, tree, where), digest=tree):
            if entry.digest is None or entry.digest.hex in seen:
                continue
            seen.add(entry.digest.hex)
            out.append(entry.digest)
            if entry.type == "dir":
                stack.append(entry.digest)
    return out


def copy_objects(
    src: ObjectStore,
    dst: ObjectStore,
    digests: list[Digest],
    *,
    where: str,
    jobs: int,
    progress: Callable[[int, int, int], None] | None = None,
    fresh: bool = False,
) -> CopyStats:
    """Put every digest of ``src`` that ``dst`` lacks into ``dst``; ``progress(done, total, bytes_sent)``
    after each batch. ``fresh``: ``dst`` was made by this transfer and holds nothing, so nothing is
    looked up there first (``put_bytes`` still stores an object only once).

    Between two local stores (a folder remote), what ``dst`` lacks is looked up all at once, and
    packed objects move a span of neighbouring records at a time (``packcopy``), each record's
    header and hash checked before it is staged; the rest, and the records that fail a check, go
    one by one. Each work item is one batch on ``dst``: one pack commit (one fdatasync) each.
    """
    stats = CopyStats()
    lock = threading.Lock()
    items: list[Callable[[], tuple[int, int, int]]] = []
    rest = digests
    if isinstance(src, SpanStore) and isinstance(dst, SpanStore):
        if not fresh:
            rest = dst.lacking(digests)
            stats.present = len(digests) - len(rest)
            fresh = True  # what is left is not there
        spans, rest = src.packed_spans(rest)
        items += [partial(_send_spans, src, dst, group, where) for group in _groups(spans)]
    for i in range(0, len(rest), _CHUNK):
        items.append(partial(_send_objects, src, dst, rest[i : i + _CHUNK], where, fresh=fresh))

    def send(item: Callable[[], tuple[int, int, int]]) -> None:
        sent, size, present = item()
        with lock:
            stats.objects += sent
            stats.bytes += size
            stats.present += present
            if progress is not None:
                progress(stats.objects + stats.present, len(digests), stats.bytes)

    if jobs <= 1 or len(items) <= 1:
        for item in items:
            send(item)
        return stats
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="labvault-copy") as pool:
        for future in [pool.submit(send, item) for item in items]:
            future.result()
    return stats


def _groups(spans: list[Span]) -> list[list[Span]]:
    """Spans in work items of about ``_CHUNK_BYTES`` (a span is never split)."""
    groups: list[list[Span]] = []
    size = _CHUNK_BYTES
    for span in spans:
        if size >= _CHUNK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(span)
        size += span.stop - span.start
    return groups


def _send_spans(src: SpanStore, dst: SpanStore, spans: list[Span], where: str) -> tuple[int, int, int]:
    sent = size = 0
    with dst.batch():
        for span in spans:
            frames = src.read_span(span)
            bad = dst.put_framed(frames, span) if frames is not None else [Digest(d.hex()) for d, _, _ in span.records]
            if bad:
                skipped = {d.hex for d in bad}
                size += sum(n for d, _, n in span.records if d.hex() not in skipped)
                for digest in bad:  # a wrong index row, damaged framing or a corrupt object: one by one
                    size += _send_one(src, dst, digest, where)
            else:
                size += span.size
            sent += len(span.records)
    return sent, size, 0


def _send_objects(
    src: ObjectStore, dst: ObjectStore, digests: list[Digest], where: str, *, fresh: bool
) -> tuple[int, int, int]:
    sent = size = present = 0
    with dst.batch():
        for digest in digests:
            if not fresh and dst.has(digest):
                present += 1
                continue
            size += _send_one(src, dst, digest, where)
            sent += 1
    return sent, size, present


def _send_one(src: ObjectStore, dst: ObjectStore, digest: Digest, where: str) -> int:
    # One read of the sending side: its first _BIG + 1 bytes say whether the object fits in memory
    # (no separate size look-up, and no trust in the size a tree claims).
    try:
        with src.open(digest, verify=False) as stream:
            head = stream.read(_BIG + 1)
            if len(head) <= _BIG:
                # put_bytes hashes what it stores: the digest it returns is the check, and a mismatch
                # raised here drops the worker's whole batch.
                size, got = len(head), dst.put_bytes(head)
            else:
                rest = _Counted(head, stream)
                got = _put_stream(dst, rest)
                size = rest.size
    except NotFound:
        raise IntegrityError(f"object {digest} is missing on {where}", hint=f"run `labvault fsck` on {where}") from None
    if got != digest:
        raise IntegrityError(
            f"object {digest} on {where} is corrupt (it arrived as {got})",
            hint=f"run `labvault fsck` on {where}; nothing was recorded here",
        )
    return size


class _Counted(io.RawIOBase):
    """The bytes already read, then the rest of the stream; counts what was read."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head, self._stream, self.size = head, stream, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            out, self._head = self._head + self._stream.read(), b""
        elif self._head:
            out, self._head = self._head[:n], self._head[n:]
        else:
            out = self._stream.read(n)
        self.size += len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _put_stream(dst: ObjectStore, stream: object) -> Digest:
    put_stream = getattr(dst, "put_stream", None)
    if put_stream is not None:
        return put_stream(stream)  # type: ignore[no-any-return]
    return dst.put_bytes(stream.read())  # type: ignore[attr-defined]
