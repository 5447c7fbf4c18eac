"""A flipped byte at random offsets of loose objects, of packs and of the pack index.

- In an object (loose, or a packed record's payload): reads refuse it (exit 5), fsck finds it,
  and every other object is still served intact.
- In a pack's framing (a record header, the pack header): fsck must find it too (issue 9 item 2).
- In a pack, then the index lost: every good object must survive the rebuild (issue 9 item 1).
- In the pack index: no wrong byte is ever served, and every object is readable after a rebuild.

Each test runs ``FLIP_TRIALS`` trials; the counts go to the terminal summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from labvault.errors import IntegrityError, LabvaultError
from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.packfile import HEADER_SIZE, PACK_MAGIC
from labvault.vault import Vault
from tests.corruption import flip_byte_at, packed_records
from tests.e2e.conftest import LABVAULT, Cli
from tests.faults.conftest import FLIP_TRIALS, Tally

pytestmark = pytest.mark.slow

OBJECTS = 40
PER_TRIAL = 3


def _read(store: LocalObjectStore, digest: Digest) -> bytes | None:
    """A verified read: the bytes, or None if it was refused."""
    try:
        return store.get_bytes(digest)
    except LabvaultError:
        return None


def _put(store: LocalObjectStore, data: bytes, *, loose: bool) -> Digest:
    return store.put_stream(io.BytesIO(data)) if loose else store.put_bytes(data)


def _objects(store: LocalObjectStore, rng: random.Random, *, loose: bool, n: int = OBJECTS) -> dict[Digest, bytes]:
    originals = {}
    with store.batch():
        for _ in range(n):
            data = rng.randbytes(rng.randint(1, 64 * 1024))
            originals[_put(store, data, loose=loose)] = data
    return originals


@pytest.mark.parametrize("where", ["loose", "packed"])
def test_a_flipped_byte_in_an_object_is_refused_and_found(
    vault: Vault, project: Path, where: str, tally: Tally, cli: Cli
) -> None:
    counts = tally[f"flip: {where} object"]
    rng = random.Random(f"flip-{where}")
    loose = where == "loose"
    store = vault.objects
    originals = _objects(store, rng, loose=loose)
    digests = sorted(originals, key=lambda d: d.hex)
    assert all(store.is_packed(d) is not loose for d in digests)

    def damage() -> list[Digest]:
        chosen = rng.sample(digests, PER_TRIAL)
        for digest in chosen:
            path, offset, size = store.locate(digest)
            flip_byte_at(path, offset + rng.randrange(size), rng.randrange(1, 256))
        counts["flips"] += len(chosen)
        return chosen

    def check_survivors(damaged: list[Digest]) -> None:
        for digest in digests:
            if digest not in damaged:
                assert store.get_bytes(digest) == originals[digest]
                counts["good objects read back intact"] += 1

    def restore(damaged: list[Digest]) -> None:
        for digest in damaged:
            assert not store.has(digest), "a corrupt object is quarantined"
            _put(store, originals[digest], loose=loose)

    for _ in range(FLIP_TRIALS):
        damaged = damage()
        for digest in damaged:
            with pytest.raises(IntegrityError):
                store.get_bytes(digest)
            counts["reads refused"] += 1
        check_survivors(damaged)
        restore(damaged)

        damaged = damage()
        report = vault.maintenance.fsck()
        assert set(report.corrupt) == set(damaged), report
        counts["found by fsck"] += len(damaged)
        check_survivors(damaged)
        restore(damaged)
    store.packs.close()  # let the executable take over the pack

    # The same through the executable: `object cat` refuses (exit 5), `fsck` finds it (exit 1).
    refused = rng.choice(digests)
    path, offset, size = store.locate(refused)
    flip_byte_at(path, offset + rng.randrange(size))
    cat = subprocess.run([LABVAULT, "object", "cat", str(refused)], cwd=project, capture_output=True, check=False)
    assert cat.returncode == 5, cat.stderr
    assert cat.stderr.startswith(b"error: ")
    assert b"Traceback" not in cat.stderr
    assert cat.stdout == b""  # under 1 MiB (one chunk of the stream): not a byte of it went out
    _put(store, originals[refused], loose=loose)
    found = rng.choice([d for d in digests if d != refused])
    path, offset, size = store.locate(found)
    flip_byte_at(path, offset + rng.randrange(size))
    store.packs.close()
    report = json.loads(cli("fsck", "--json", expect=1).stdout)
    assert [c["ref"] for c in report["corrupt"]] == [str(found)]


def test_fsck_finds_a_flipped_byte_in_pack_framing(vault: Vault, tally: Tally) -> None:
    counts = tally["flip: pack framing, index kept"]
    rng = random.Random("flip-framing")
    store = vault.objects
    originals = _objects(store, rng, loose=False)
    for trial in range(FLIP_TRIALS):
        spans = packed_records(store, list(originals))
        digest, start, _ = rng.choice(spans)
        path = store.locate(digest)[0]
        where = rng.randrange(len(PACK_MAGIC)) if trial % 5 == 0 else start + rng.randrange(HEADER_SIZE)
        mask = rng.randrange(1, 256)
        flip_byte_at(path, where, mask)
        counts["flips"] += 1
        counts["found by fsck"] += not vault.maintenance.fsck().clean
        _never_wrong(store, originals, counts)
        flip_byte_at(path, where, mask)  # put it back, and anything fsck set aside
        for digest, data in originals.items():
            if not store.has(digest):
                store.put_bytes(data)
    assert counts["found by fsck"] == counts["flips"]


def _never_wrong(store: LocalObjectStore, originals: dict[Digest, bytes], counts: Counter[str]) -> None:
    for digest, data in originals.items():
        got = _read(store, digest)
        assert got is None or got == data, f"sha256:{digest.hex} was served with wrong bytes"
        counts["reads served intact" if got is not None else "reads refused"] += 1


def _fresh_pack(vault_dir: Path, rng: random.Random) -> tuple[dict[Digest, bytes], list[tuple[Digest, int, int]]]:
    """An object store holding one pack of ``OBJECTS`` records, its index written out and closed."""
    store = LocalObjectStore.create(vault_dir)
    originals = _objects(store, rng, loose=False)
    spans = packed_records(store, list(originals))
    assert len({store.locate(d)[0] for d in originals}) == 1
    store.packs.close()
    index = store.packs.index_path
    if Path(f"{index}-wal").exists():  # fold the WAL in, so that the flip lands in what is read
        with contextlib.closing(sqlite3.connect(index)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return originals, spans


def _rebuild(vault_dir: Path) -> LocalObjectStore:
    """Lose the pack index; the next open rebuilds it from the packs."""
    for suffix in ("", "-wal", "-shm"):
        (vault_dir / "objects" / "packs" / f"index.sqlite{suffix}").unlink(missing_ok=True)
    return LocalObjectStore(vault_dir)


def _pack_of(vault_dir: Path) -> Path:
    [pack] = (vault_dir / "objects" / "packs").glob("*.pack")
    return pack


def _flip_then_rebuild(tmp_path: Path, tally: Tally, *, last: bool) -> Counter[str]:
    counts = tally[f"flip: {'last' if last else 'inner'} pack record, then index lost"]
    rng = random.Random(f"rebuild-{last}")
    for trial in range(FLIP_TRIALS):
        vault_dir = tmp_path / f"v{trial}"
        originals, spans = _fresh_pack(vault_dir, rng)
        damaged, start, end = spans[-1] if last else rng.choice(spans[:-1])
        flip_byte_at(_pack_of(vault_dir), rng.randrange(start, end), rng.randrange(1, 256))
        counts["flips"] += 1
        store = _rebuild(vault_dir)
        for digest, data in originals.items():
            got = _read(store, digest)
            assert got is None or got == data, f"sha256:{digest.hex} was served with wrong bytes"
            if digest != damaged:
                counts["good objects"] += 1
                counts["good objects readable after the rebuild"] += got == data
        store.packs.close()
    return counts


def test_good_objects_survive_a_flipped_inner_record_and_a_lost_index(tmp_path: Path, tally: Tally) -> None:
    counts = _flip_then_rebuild(tmp_path, tally, last=False)
    assert counts["good objects readable after the rebuild"] == counts["good objects"]


def test_a_flipped_last_record_and_a_lost_index_lose_only_that_record(tmp_path: Path, tally: Tally) -> None:
    counts = _flip_then_rebuild(tmp_path, tally, last=True)
    assert counts["good objects readable after the rebuild"] == counts["good objects"]


def test_a_flipped_byte_in_the_pack_index_never_serves_a_wrong_byte(tmp_path: Path, tally: Tally) -> None:
    counts = tally["flip: pack index"]
    rng = random.Random("flip-index")
    for trial in range(FLIP_TRIALS):
        vault_dir = tmp_path / f"v{trial}"
        originals, _ = _fresh_pack(vault_dir, rng)
        index = vault_dir / "objects" / "packs" / "index.sqlite"
        flip_byte_at(index, rng.randrange(index.stat().st_size), rng.randrange(1, 256))
        counts["flips"] += 1
        store = LocalObjectStore(vault_dir)
        _never_wrong(store, originals, counts)
        try:  # what fsck does: every row is read, and a wrong one is re-derived from the pack
            for info in list(store.iter_objects()):
                with contextlib.suppress(LabvaultError):
                    store.verify(info.digest)
        except LabvaultError:  # SQLite cannot read the index at all: only a rebuild helps
            counts["index unreadable"] += 1
        else:
            for digest, data in originals.items():
                assert _read(store, digest) == data, "an intact object lost to a damaged index row"
                counts["readable after fsck, index kept"] += 1
        store.close()
        store = _rebuild(vault_dir)
        for digest, data in originals.items():
            assert store.get_bytes(digest) == data
            counts["readable after the rebuild"] += 1
        store.packs.close()


def test_a_flipped_indexed_end_in_the_pack_index_does_not_cut_the_pack(tmp_path: Path) -> None:
    """A damaged ``indexed_end`` that points into a record makes the next open re-scan from there."""
    vault_dir = tmp_path / "v"
    originals, spans = _fresh_pack(vault_dir, random.Random("indexed-end"))
    _, start, _ = spans[len(spans) // 2]
    index = vault_dir / "objects" / "packs" / "index.sqlite"
    with contextlib.closing(sqlite3.connect(index)) as conn, conn:
        conn.execute("UPDATE packs SET indexed_end = ?", (start + 7,))
    size = os.stat(_pack_of(vault_dir)).st_size
    store = LocalObjectStore(vault_dir)
    unreadable = [d for d, data in originals.items() if _read(store, d) != data]
    store.packs.close()
    assert os.stat(_pack_of(vault_dir)).st_size == size
    assert unreadable == []


_ROW_DAMAGE = {  # each as one flipped bit of the column would leave it
    "offset": "UPDATE objects SET offset = (offset | 1) - (offset & 1) WHERE digest = ?",
    "size": "UPDATE objects SET size = (size | 1) - (size & 1) WHERE digest = ?",
    "pack": "UPDATE objects SET pack = (pack | 2) - (pack & 2) WHERE digest = ?",
}


@pytest.mark.parametrize("column", sorted(_ROW_DAMAGE))
def test_a_flipped_byte_in_an_index_row_does_not_lose_an_intact_object(tmp_path: Path, column: str) -> None:
    vault_dir = tmp_path / "v"
    originals, spans = _fresh_pack(vault_dir, random.Random("index-row"))
    digest = spans[len(spans) // 2][0]
    index = vault_dir / "objects" / "packs" / "index.sqlite"
    with contextlib.closing(sqlite3.connect(index)) as conn, conn:
        conn.execute(_ROW_DAMAGE[column], (bytes.fromhex(digest.hex),))
    store = LocalObjectStore(vault_dir)
    assert _read(store, digest) == originals[digest]  # the row is wrong, not the object
    assert list(store.quarantine_dir.iterdir()) == []
    store.close()
    store = LocalObjectStore(vault_dir)  # the next command
    assert all(_read(store, d) == data for d, data in originals.items())
    store.close()


def test_a_flipped_digest_in_an_index_row_is_repaired_by_fsck(vault: Vault) -> None:
    rng = random.Random("index-row-digest")
    originals = _objects(vault.objects, rng, loose=False, n=10)
    digest = sorted(originals, key=lambda d: d.hex)[3]
    mangled = bytes([bytes.fromhex(digest.hex)[0] ^ 1]) + bytes.fromhex(digest.hex)[1:]
    vault.close()
    with contextlib.closing(sqlite3.connect(vault.objects.packs.index_path)) as conn, conn:
        conn.execute("UPDATE objects SET digest = ? WHERE digest = ?", (mangled, bytes.fromhex(digest.hex)))
    with Vault.open(vault.dir) as again:
        assert not again.objects.has(digest)  # a miss is not checked: it is the hot path of every put
        report = again.maintenance.fsck()
        assert report.corrupt == ()  # the mangled row named nothing stored; the record it pointed at is intact
        assert not again.objects.has(Digest(mangled.hex()))
        assert all(again.objects.get_bytes(d) == data for d, data in originals.items())


def test_the_executable_serves_an_object_whose_index_row_is_wrong(vault: Vault, project: Path, cli: Cli) -> None:
    data = random.Random("cat-row").randbytes(5000)
    digest = vault.objects.put_bytes(data)
    vault.objects.put_bytes(b"a second record, so that the pack is not a single one")
    vault.close()
    with contextlib.closing(sqlite3.connect(vault.objects.packs.index_path)) as conn, conn:
        conn.execute(_ROW_DAMAGE["offset"], (bytes.fromhex(digest.hex),))
    cat = subprocess.run([LABVAULT, "object", "cat", str(digest)], cwd=project, capture_output=True, check=False)
    assert (cat.returncode, cat.stdout) == (0, data), cat.stderr
    cli("fsck")  # exit 0: the row was re-derived from the pack, nothing is corrupt
