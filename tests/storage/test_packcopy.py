"""Packed objects copied between two local stores a span of records at a time (``packcopy.py``).

Nothing read from the sending store is trusted: a record whose bytes do not hash is refused naming it,
a wrong index row or damaged framing sends the object the object-by-object way (which re-derives the
row, and writes fresh framing), and the receiving packs stay sound in every case.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from labvault.errors import IntegrityError
from labvault.refs import Digest
from labvault.services.remotes.copy import copy_objects
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.packcopy import plan_spans
from labvault.storage.objects.packfile import HEADER_SIZE
from tests.corruption import flip_byte, flip_byte_at

COUNT = 300


def _payload(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (1 + i % 7)


@pytest.fixture
def src(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore.create(tmp_path / "src")
    with store.batch():
        for i in range(COUNT):
            store.put_bytes(_payload(i))
    return store


def _digests() -> list[Digest]:
    return [Digest(hashlib.sha256(_payload(i)).hexdigest()) for i in range(COUNT)]


def _sound(store: LocalObjectStore) -> None:
    assert store.check_packs() == ([], [])
    for i, digest in enumerate(_digests()):
        if store.has(digest):
            assert store.get_bytes(digest) == _payload(i)


def test_neighbouring_records_travel_as_one_span_and_arrive_verified(src: LocalObjectStore, tmp_path: Path) -> None:
    digests = _digests()
    spans, rest = plan_spans(src.packs, digests[::-1])  # in any order: read in pack order
    assert rest == []
    assert len(spans) == 1
    assert [d for d, _, _ in spans[0].records] == [bytes.fromhex(d.hex) for d in digests]

    dst = LocalObjectStore.create(tmp_path / "dst")
    with dst.batch():
        dst.put_bytes(_payload(5))  # already there: looked up, not sent again
    stats = copy_objects(src, dst, digests, where="src", jobs=2)
    assert (stats.objects, stats.present) == (COUNT - 1, 1)
    assert stats.bytes == sum(len(_payload(i)) for i in range(COUNT) if i != 5)
    assert all(dst.has(d) for d in digests)
    _sound(dst)

    # Every other object: spans of one record each, gaps left behind.
    spans, _ = plan_spans(src.packs, digests[::2])
    assert len(spans) == COUNT // 2


def test_a_corrupt_record_inside_a_span_is_refused_naming_it(src: LocalObjectStore, tmp_path: Path) -> None:
    digests = _digests()
    bad = digests[COUNT // 2]
    flip_byte(src, bad)  # framing intact, bytes that no longer hash to the name
    dst = LocalObjectStore.create(tmp_path / "dst")
    with pytest.raises(IntegrityError, match=f"{bad}.*corrupt"):
        copy_objects(src, dst, digests, where="remote 'nas'", jobs=1)
    assert not any(dst.has(d) for d in digests)  # the whole batch was dropped
    _sound(dst)


def test_a_wrong_index_row_or_damaged_framing_still_delivers_the_object(src: LocalObjectStore, tmp_path: Path) -> None:
    digests = _digests()
    a, b = digests[10], digests[20]
    with sqlite3.connect(src.packs.index_path) as conn:  # two rows swapped: each points at the other's record
        rows = {
            d: conn.execute("SELECT offset, size FROM objects WHERE digest = ?", (bytes.fromhex(d.hex),)).fetchone()
            for d in (a, b)
        }
        for d, other in ((a, b), (b, a)):
            conn.execute(
                "UPDATE objects SET offset = ?, size = ? WHERE digest = ?", (*rows[other], bytes.fromhex(d.hex))
            )
    path, offset, _ = src.locate(digests[30])
    flip_byte_at(path, offset - HEADER_SIZE)  # its record magic: framing damaged, bytes intact
    src.packs.close_all()

    dst = LocalObjectStore.create(tmp_path / "dst")
    stats = copy_objects(src, dst, digests, where="src", jobs=1)
    assert stats.objects == COUNT
    assert all(dst.has(d) for d in digests)
    _sound(dst)  # fresh framing for the damaged record, every row right


@pytest.mark.timeout(60)
def test_workers_read_packs_whose_names_they_never_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's first use of the sending index may be a span read (a pull from a fresh remote hung there)."""
    from labvault.services.remotes import copy as copy_mod
    from labvault.storage.objects import packs as packs_mod

    monkeypatch.setattr(packs_mod, "PACK_TARGET", 1)  # each batch leaves its pack: four packs
    monkeypatch.setattr(copy_mod, "_CHUNK_BYTES", 1)  # each span a work item of its own
    store = LocalObjectStore.create(tmp_path / "src")
    digests = _digests()
    for part in range(4):
        with store.batch():
            for i in range(part * COUNT // 4, (part + 1) * COUNT // 4):
                store.put_bytes(_payload(i))
    assert len(store.packs.pack_files()) == 4
    store.close()

    src = LocalObjectStore(tmp_path / "src")  # nothing looked up in it yet
    dst = LocalObjectStore.create(tmp_path / "dst")
    stats = copy_objects(src, dst, digests, where="src", jobs=4)
    assert stats.objects == COUNT
    _sound(dst)
