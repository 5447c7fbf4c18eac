"""Packed objects copied between two local stores a range of records at a time (push and pull).

A transfer between two folder vaults moves mostly small, packed objects. Asking the sending index
for each one, reading each one and appending each one costs far more than the bytes do: here the
sending side's rows are looked up together, the records an object list names that lie next to each
other in a pack are read with one ``pread`` (a *span*), and their frames (header and bytes, the same
format in both stores) are appended to the receiving pack as they are.

Nothing read is trusted: each record's header must name the digest and size its row gave, and its
bytes must hash to its digest, before it is staged on the receiving side. A record that fails either
check is left to the caller, who sends it the object-by-object way (which re-derives a wrong index
row, and refuses a corrupt object naming it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from labvault.refs import Digest
from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.packfile import HEADER, HEADER_SIZE, PACK_MAGIC, RECORD_MAGIC
from labvault.storage.objects.packindex import PackIndex
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["SPAN_LIMIT", "Span", "SpanStore", "check_frames", "plan_spans"]

SPAN_LIMIT = 4 << 20  # bytes read by one pread at most (a span holds at least one record)
_FIRST_RECORD = len(PACK_MAGIC) + HEADER_SIZE

Record = tuple[bytes, int, int]  # digest, offset of its bytes (in the pack, or in a span's frames), size


@dataclass(frozen=True, slots=True)
class Span:
    """Records lying next to each other in one pack: bytes ``start..stop`` of it."""

    pack: int
    start: int
    stop: int
    records: tuple[Record, ...]  # offsets relative to ``start``

    @property
    def size(self) -> int:
        """The bytes of the objects (headers left out)."""
        return sum(size for _, _, size in self.records)


@runtime_checkable
class SpanStore(ObjectStore, Protocol):
    """A store that keeps small objects in packs of this format, and can move them span by span."""

    def packed_spans(self, digests: Sequence[Digest]) -> tuple[list[Span], list[Digest]]: ...

    def read_span(self, span: Span) -> bytes | None: ...

    def put_framed(self, frames: bytes, span: Span) -> list[Digest]: ...

    def lacking(self, digests: Sequence[Digest]) -> list[Digest]: ...


def plan_spans(
    index: PackIndex, digests: Sequence[Digest], *, limit: int = SPAN_LIMIT
) -> tuple[list[Span], list[Digest]]:
    """The spans that hold the packed ones of ``digests``, and the digests that are not packed.

    A row that cannot be right (its offset before the first record, its size above what is packed)
    is left out of the spans: the object goes the object-by-object way.
    """
    keys = [bytes.fromhex(d.hex) for d in digests]
    rows = index.lookup_many(keys)
    rest: list[Digest] = []
    by_pack: dict[int, list[Record]] = {}
    for d, key in zip(digests, keys, strict=True):
        row = rows.get(key)
        if row is None or row[1] < _FIRST_RECORD or not 0 <= row[2] <= SMALL:
            rest.append(d)
            continue
        by_pack.setdefault(row[0], []).append((key, row[1], row[2]))
    spans: list[Span] = []
    for pack, records in by_pack.items():
        records.sort(key=lambda r: r[1])
        run: list[Record] = []
        start = stop = 0
        for digest, offset, size in records:
            head = offset - HEADER_SIZE
            if run and (head != stop or offset + size - start > limit):
                spans.append(_span(pack, start, stop, run))
                run = []
            if not run:
                start = head
            run.append((digest, offset, size))
            stop = offset + size
        if run:
            spans.append(_span(pack, start, stop, run))
    return spans, rest


def _span(pack: int, start: int, stop: int, run: Iterable[Record]) -> Span:
    return Span(pack, start, stop, tuple((digest, offset - start, size) for digest, offset, size in run))


def check_frames(frames: bytes, span: Span) -> tuple[list[tuple[int, int, list[Record]]], list[bytes]]:
    """Split a span's bytes into runs of sound records and the digests that are not sound.

    A record is sound when its header names its digest and size and its bytes hash to its digest.
    Each run is ``(start, stop, records)``: ``frames[start:stop]`` holds exactly those records, whose
    offsets are relative to ``start``. ``frames`` may be short (a pack cut since its rows were read).
    """
    view = memoryview(frames)
    runs: list[tuple[int, int, list[Record]]] = []
    bad: list[bytes] = []
    run: list[Record] = []
    start = stop = 0
    for digest, offset, size in span.records:
        head, end = offset - HEADER_SIZE, offset + size
        sound = (
            end <= len(frames)
            and view[head:offset] == HEADER.pack(RECORD_MAGIC, digest, size)
            and hashlib.sha256(view[offset:end]).digest() == digest
        )
        if not sound:
            bad.append(digest)
            if run:
                runs.append((start, stop, run))
                run = []
            continue
        if not run:
            start = head
        run.append((digest, offset - start, size))
        stop = end
    if run:
        runs.append((start, stop, run))
    return runs, bad
