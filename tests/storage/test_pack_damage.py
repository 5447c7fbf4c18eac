"""Damaged packs: recovery never destroys a sound record, and fsck reads every record's framing.

Each case flips one byte of a 100-record pack (in record 10's payload, size field, digest or magic, or
in the pack header), with the index kept and with the index deleted (rebuilt from the packs).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.packfile import HEADER_SIZE
from labvault.vault import Vault
from tests.e2e.conftest import Cli
from tests.e2e.conftest import cli as cli  # the real executable, as in tests/e2e

RECORDS = 100
DAMAGED = 10  # the record whose bytes are flipped
OLD = 1_000_000.0


def sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def _payload(tag: str, i: int) -> bytes:
    return f"{tag} record {i:03d} ".encode() + hashlib.sha256(f"{tag}{i}".encode()).digest() * (2 + i % 5)


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    vault, _ = Vault.init(tmp_path)
    yield vault
    vault.close()


def _fill(store: LocalObjectStore, tag: str = "a") -> list[Digest]:
    with store.batch():
        return [store.put_bytes(_payload(tag, i)) for i in range(RECORDS)]


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x5A]))


# Where, relative to record 10's payload offset, each case flips a byte.
WHERE = {
    "payload": lambda off, size: off + size // 2,
    "size": lambda off, size: off - 8,  # the size field's low byte
    "size-high": lambda off, size: off - 2,  # a high byte: the size points past the end of the pack
    "digest": lambda off, size: off - 8 - 16,
    "magic": lambda off, size: off - HEADER_SIZE + 1,
    "pack-header": lambda off, size: 3,
}


def _damage(vault: Vault, digests: list[Digest], where: str) -> Path:
    path, offset, size = vault.objects.locate(digests[DAMAGED])
    _flip(path, WHERE[where](offset, size))
    return path


def _reopen(vault: Vault, *, drop_index: bool) -> Vault:
    vault.close()  # as if the process ended: its pack is no longer held
    if drop_index:
        index = vault.objects.packs.index_path
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
    return Vault.open(vault.dir)


def _readable(store: LocalObjectStore, digests: list[Digest], tag: str = "a") -> list[int]:
    """Which records read back (never a wrong byte: a read verifies)."""
    ok = []
    for i, d in enumerate(digests):
        try:
            data = store.get_bytes(d)
        except (NotFound, IntegrityError):
            continue
        assert data == _payload(tag, i)
        ok.append(i)
    return ok


@pytest.mark.parametrize("drop_index", [True, False], ids=["index-deleted", "index-kept"])
@pytest.mark.parametrize("where", list(WHERE))
def test_one_damaged_record_costs_at_most_that_record(vault: Vault, where: str, drop_index: bool) -> None:
    digests = _fill(vault.objects)
    pack = _damage(vault, digests, where)
    size = pack.stat().st_size
    again = _reopen(vault, drop_index=drop_index)
    try:
        report = again.maintenance.fsck()
        assert not report.clean  # fsck reports the damage
        if where == "payload":
            assert report.corrupt == (digests[DAMAGED],)
        # With the index kept, a damaged header does not touch the object: the index knows where it is.
        lost = where == "payload" or (where == "digest" and drop_index)
        assert _readable(again.objects, digests) == [i for i in range(RECORDS) if not (lost and i == DAMAGED)]
        assert pack.stat().st_size == size  # never cut in the middle
        if lost:
            quarantined = b"".join(p.read_bytes() for p in again.objects.quarantine_dir.iterdir())
            assert _payload("a", DAMAGED)[:10] in quarantined  # its bytes were kept aside
    finally:
        again.close()


@pytest.mark.parametrize("where", ["size", "magic", "pack-header", "digest"])
def test_gc_rewrites_a_pack_whose_framing_is_damaged_and_fsck_is_clean_after(vault: Vault, where: str) -> None:
    digests = _fill(vault.objects)
    _damage(vault, digests, where)
    again = _reopen(vault, drop_index=False)
    try:
        assert not again.maintenance.fsck().clean
        again.maintenance.gc(grace=3600)
        assert again.maintenance.fsck().clean
        assert _readable(again.objects, digests) == list(range(RECORDS))
    finally:
        again.close()


def test_the_record_found_corrupt_on_recovery_is_reported_once(vault: Vault) -> None:
    digests = _fill(vault.objects)
    _damage(vault, digests, "payload")
    again = _reopen(vault, drop_index=True)
    try:
        assert again.maintenance.fsck().corrupt == (digests[DAMAGED],)
        assert again.maintenance.fsck().clean  # unreferenced: nothing is missing either
    finally:
        again.close()


@pytest.mark.parametrize("drop_index", [True, False], ids=["index-deleted", "index-kept"])
def test_two_damaged_packs(vault: Vault, drop_index: bool) -> None:
    first = _fill(vault.objects, "a")
    holder = LocalObjectStore(vault.dir)  # a second writer at the same time: a second pack
    with vault.objects.batch(), holder.batch():
        vault.objects.put_bytes(b"keeps the first pack busy")
        second = [holder.put_bytes(_payload("b", i)) for i in range(RECORDS)]
    holder.packs.close()
    assert vault.objects.locate(first[0])[0] != vault.objects.locate(second[0])[0]
    _damage(vault, first, "payload")
    _damage(vault, second, "payload")
    again = _reopen(vault, drop_index=drop_index)
    try:
        assert set(again.maintenance.fsck().corrupt) == {first[DAMAGED], second[DAMAGED]}
        assert len(_readable(again.objects, first)) == RECORDS - 1
        assert len(_readable(again.objects, second, "b")) == RECORDS - 1
    finally:
        again.close()


def test_a_torn_tail_is_cut_after_its_bytes_are_quarantined_and_is_no_fsck_problem(vault: Vault) -> None:
    digests = _fill(vault.objects)
    path, _, _ = vault.objects.locate(digests[-1])
    size = path.stat().st_size
    torn = b"LVOB" + bytes(sha(b"never finished").hex, "ascii")[:32] + (500).to_bytes(8, "little") + b"half"
    with open(path, "ab") as f:
        f.write(torn)
    again = _reopen(vault, drop_index=True)
    try:
        assert len(_readable(again.objects, digests)) == RECORDS
        assert path.stat().st_size == size
        assert [p.read_bytes() for p in again.objects.quarantine_dir.iterdir()] == [torn]
        assert again.maintenance.fsck().clean
    finally:
        again.close()


def test_a_damaged_last_record_is_a_torn_tail(vault: Vault) -> None:
    digests = _fill(vault.objects)
    path, offset, _ = vault.objects.locate(digests[-1])
    _flip(path, offset + 3)
    again = _reopen(vault, drop_index=True)
    try:
        assert _readable(again.objects, digests) == list(range(RECORDS - 1))
        assert path.stat().st_size == offset - HEADER_SIZE
        assert len(os.listdir(again.objects.quarantine_dir)) == 1
    finally:
        again.close()


def test_a_wrong_index_row_to_a_damaged_record_is_refused_and_reported_once(vault: Vault) -> None:
    """The index row and the record it names are both damaged: nothing intact is left to serve."""
    digests = _fill(vault.objects)
    _damage(vault, digests, "digest")
    _damage(vault, digests, "payload")
    vault.close()
    with sqlite3.connect(vault.objects.packs.index_path) as conn:
        conn.execute("UPDATE objects SET offset = offset + 1 WHERE digest = ?", (bytes.fromhex(digests[DAMAGED].hex),))
    conn.close()
    with Vault.open(vault.dir) as again:
        with pytest.raises(IntegrityError, match="is lost"):
            again.objects.get_bytes(digests[DAMAGED])
        assert not again.objects.has(digests[DAMAGED])
        report = again.maintenance.fsck()
        assert report.corrupt == (digests[DAMAGED],)
        assert _readable(again.objects, digests) == [i for i in range(RECORDS) if i != DAMAGED]
        assert again.maintenance.fsck().corrupt == ()


def test_fsck_counts_the_quarantine_and_gc_quarantine_clears_what_is_older_than_the_grace(vault: Vault) -> None:
    digests = _fill(vault.objects)
    path, _, _ = vault.objects.locate(digests[-1])
    torn = b"LVOB" + bytes(sha(b"never finished").hex, "ascii")[:32] + (500).to_bytes(8, "little") + b"half"
    with open(path, "ab") as f:
        f.write(torn)
    big = vault.objects.put_bytes(b"x" * (SMALL + 1))  # a loose object, stored long ago
    os.utime(vault.objects.path_of(big), (OLD, OLD))
    again = _reopen(vault, drop_index=False)  # recovery sets the torn tail aside
    try:
        _flip(again.objects.path_of(big), 7)
        with pytest.raises(IntegrityError):
            again.objects.get_bytes(big)  # set aside now, whatever its age as an object
        report = again.maintenance.fsck()
        assert report.clean  # set aside is not a problem
        assert (report.quarantine_files, report.quarantine_bytes) == (2, len(torn) + SMALL + 1)
        [tail] = [p for p in again.objects.quarantine_dir.iterdir() if p.stat().st_size == len(torn)]
        os.utime(tail, (OLD, OLD))

        assert again.maintenance.gc(grace=3600).quarantine_removed == 0  # only on request
        dry = again.maintenance.gc(grace=3600, quarantine=True, dry_run=True)
        assert (dry.quarantine_removed, dry.quarantine_bytes_removed) == (1, len(torn))
        assert tail.exists()
        assert again.maintenance.gc(grace=3600, quarantine=True).quarantine_removed == 1
        assert not tail.exists()
        assert again.maintenance.fsck().quarantine_files == 1
    finally:
        again.close()


def test_cli_fsck_reports_the_quarantine_and_gc_quarantine_clears_it(cli: Cli, project: Path) -> None:
    cli("init")
    (project / "a.txt").write_text("kept\n")
    cli("object", "put", "a.txt")
    [pack] = (project / ".labvault" / "objects" / "packs").glob("*.pack")
    with open(pack, "ab") as f:
        f.write(b"LVOB" + b"\x01" * 32 + (500).to_bytes(8, "little") + b"torn")  # a killed batch's tail
    report = json.loads(cli("fsck", "--json").stdout)  # recovery set it aside
    assert report["quarantine"] == {"count": 1, "bytes": 48}
    assert "1 files (48 B) in quarantine/" in cli("fsck").stdout
    gc = json.loads(cli("gc", "--quarantine", "--json").stdout)
    assert gc["quarantine_removed"] == {"count": 0, "bytes": 0}  # younger than the 14 days' grace
    gc = json.loads(cli("gc", "--quarantine", "--grace", "0", "--json").stdout)
    assert gc["quarantine_removed"] == {"count": 1, "bytes": 48}
    assert json.loads(cli("fsck", "--json").stdout)["quarantine"] == {"count": 0, "bytes": 0}


def test_gc_compaction_keeps_an_object_whose_index_row_is_wrong(vault: Vault) -> None:
    digests = _fill(vault.objects)
    for digest in digests[: RECORDS * 2 // 3]:  # mostly dead space: gc rewrites the pack
        vault.objects.delete(digest)
    kept = digests[-5]
    vault.close()
    with sqlite3.connect(vault.objects.packs.index_path) as conn:
        conn.execute("UPDATE objects SET offset = offset + 2 WHERE digest = ?", (bytes.fromhex(kept.hex),))
    conn.close()
    with Vault.open(vault.dir) as again:
        assert again.maintenance.gc(grace=3600).pack_bytes_reclaimed > 0
        assert _readable(again.objects, digests) == list(range(RECORDS * 2 // 3, RECORDS))
        assert list(again.objects.quarantine_dir.iterdir()) == []


def test_a_damaged_pack_id_in_many_index_rows_is_repaired_by_one_scan(vault: Vault) -> None:
    digests = _fill(vault.objects)
    vault.close()
    with sqlite3.connect(vault.objects.packs.index_path) as conn:
        conn.execute("UPDATE objects SET pack = pack + 1000")  # a whole page of rows naming no pack
    conn.close()
    with Vault.open(vault.dir) as again:
        assert _readable(again.objects, digests) == list(range(RECORDS))
        assert again.maintenance.fsck().clean


def test_an_impossible_offset_in_an_index_row_is_a_wrong_row_for_gc(vault: Vault) -> None:
    digests = _fill(vault.objects)
    for digest in digests[:80]:
        vault.objects.delete(digest)
    vault.close()
    with sqlite3.connect(vault.objects.packs.index_path) as conn:  # inside the pack header: no record starts there
        conn.execute("UPDATE objects SET offset = 3 WHERE digest = ?", (bytes.fromhex(digests[95].hex),))
    conn.close()
    with Vault.open(vault.dir) as again:
        assert again.maintenance.gc(grace=3600).pack_bytes_reclaimed > 0  # the row is repaired before the copy
        assert _readable(again.objects, digests) == list(range(80, RECORDS))
