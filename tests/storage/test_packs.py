"""Packed small objects: recovery from a killed batch or a lost index, compaction by gc, writers in
several processes at once, and bad packs met on the way."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.packfile import NEW_SUFFIX, lock_pack
from labvault.storage.objects.packs import HEADER_SIZE, PACK_MAGIC
from labvault.vault import Vault
from tests.corruption import age_object, corrupt_object

OLD = 1_000_000.0


def sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore.create(tmp_path / ".labvault")


def _pack_of(store: LocalObjectStore) -> Path:
    [pack] = [p for p in store.packs.dir.iterdir() if p.suffix == ".pack"]
    return pack


def _indexed_end(store: LocalObjectStore) -> int:
    with sqlite3.connect(store.packs.index_path) as conn:
        return int(conn.execute("SELECT indexed_end FROM packs").fetchone()[0])


def test_records_written_but_never_indexed_are_recovered_by_the_next_opener(store: LocalObjectStore) -> None:
    store.put_bytes(b"committed")
    # A batch killed after its fdatasync and before its index commit: records past indexed_end.
    with store.batch():
        store.packs.append(sha(b"orphan one").hex, b"orphan one")
        store.packs.append(sha(b"orphan two").hex, b"orphan two")
        store.packs._flush(store.packs._writer())  # on disk, as the kill found them
        os.fdatasync(store.packs._writer().fd)
        store.packs._local.writer.staged.clear()  # ...but never indexed
    store.packs.close()
    assert os.path.getsize(_pack_of(store)) > _indexed_end(store)

    again = LocalObjectStore(store.vault_dir)
    assert again.get_bytes(sha(b"orphan one")) == b"orphan one"  # an orphan now, which gc collects
    assert again.get_bytes(sha(b"committed")) == b"committed"
    assert os.path.getsize(_pack_of(store)) == _indexed_end(store)


def test_a_torn_record_at_the_end_of_a_pack_is_cut_off(store: LocalObjectStore) -> None:
    store.put_bytes(b"whole")
    store.packs.close()
    pack = _pack_of(store)
    whole = pack.stat().st_size
    with open(pack, "ab") as f:  # a header and half the bytes: the kill landed mid-write
        f.write(b"LVOB" + sha(b"half written").hex.encode()[:32] + (12).to_bytes(8, "little") + b"half")
    again = LocalObjectStore(store.vault_dir)
    assert again.has(sha(b"whole"))
    assert pack.stat().st_size == whole
    assert again.put_bytes(b"next") == sha(b"next")  # appended where the torn record was
    assert again.get_bytes(sha(b"next")) == b"next"


def test_a_deleted_index_is_rebuilt_from_the_packs(store: LocalObjectStore) -> None:
    with store.batch():
        digests = [store.put_bytes(b"record %d" % i) for i in range(300)]
    store.packs.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.packs.index_path}{suffix}").unlink(missing_ok=True)
    again = LocalObjectStore(store.vault_dir)
    assert all(again.get_bytes(d) == b"record %d" % i for i, d in enumerate(digests))
    assert len(list(again.iter_objects())) == 300


def test_gc_rewrites_a_mostly_dead_pack_and_keeps_what_is_referenced(tmp_path: Path) -> None:
    vault, _ = Vault.init(tmp_path)
    with vault.objects.batch():
        garbage = [vault.objects.put_bytes(os.urandom(2000)) for _ in range(200)]
    kept = tmp_path / "kept.txt"
    kept.write_bytes(b"referenced by a snapshot")
    vault.data.add("kept", kept)
    for d in garbage:
        age_object(vault.objects, d, OLD)
    packs_before = {p.name for p in vault.objects.packs.dir.iterdir() if p.suffix == ".pack"}
    size_before = sum(size for _, size, _ in vault.objects.packs.pack_files())

    report = vault.maintenance.gc(grace=3600)
    assert len(report.deleted) == 200
    assert report.pack_bytes_reclaimed >= 200 * (2000 + HEADER_SIZE)
    packs_after = {p.name for p in vault.objects.packs.dir.iterdir() if p.suffix == ".pack"}
    assert not packs_before & packs_after  # the old pack was rewritten, then removed
    assert sum(size for _, size, _ in vault.objects.packs.pack_files()) < size_before - 200 * 2000
    assert vault.data.open("data:kept@v1", "kept.txt").read() == b"referenced by a snapshot"
    assert all(not vault.objects.has(d) for d in garbage)
    assert vault.maintenance.fsck().clean
    vault.close()


def test_gc_leaves_out_a_corrupt_record_when_it_rewrites_a_pack(store: LocalObjectStore) -> None:
    with store.batch():
        bad = store.put_bytes(b"will rot")
        dead = [store.put_bytes(os.urandom(1000)) for _ in range(20)]
    for d in dead:
        store.delete(d)
    corrupt_object(store, bad, b"has rot!")
    store.compact()
    assert not store.has(bad)
    assert [p.read_bytes() for p in store.quarantine_dir.iterdir()] == [b"has rot!"]
    with pytest.raises(IntegrityError, match="quarantined to"):
        store.get_bytes(bad)


def test_a_re_put_refreshes_a_packed_object_at_commit(store: LocalObjectStore) -> None:
    digest = store.put_bytes(b"old news")
    age_object(store, digest, OLD)
    with store.batch():
        assert store.put_bytes(b"old news") == digest
        assert store.info(digest).mtime == OLD  # applied when the batch commits
    assert store.info(digest).mtime > OLD


def test_a_failed_batch_leaves_nothing_in_the_pack(store: LocalObjectStore) -> None:
    store.put_bytes(b"before")
    size = _pack_of(store).stat().st_size

    def failing_batch() -> None:
        with store.batch():
            store.put_bytes(b"discarded" * 1000)
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        failing_batch()
    assert _pack_of(store).stat().st_size == size
    assert not store.has(sha(b"discarded" * 1000))
    assert store.put_bytes(b"after") == sha(b"after")


WRITER = r"""
import sys
from pathlib import Path
from labvault.storage.objects.local import LocalObjectStore
store = LocalObjectStore(Path(sys.argv[1]))
tag = sys.argv[2].encode()
for r in range(20):
    with store.batch():
        for i in range(50):
            store.put_bytes(tag + b" %d %d" % (r, i))
"""


def test_writers_in_several_processes_use_packs_of_their_own(store: LocalObjectStore) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(store.vault_dir), tag], stderr=subprocess.PIPE)
        for tag in ("alpha", "beta", "gamma")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    for tag in (b"alpha", b"beta", b"gamma"):
        for r in range(20):
            for i in range(50):
                data = tag + b" %d %d" % (r, i)
                assert store.get_bytes(sha(data)) == data
    assert 1 <= len(store.packs.pack_files()) <= 3
    assert sum(1 for _ in store.iter_objects()) == 3 * 20 * 50


def test_a_pack_file_that_went_missing_is_reported_by_fsck(tmp_path: Path) -> None:
    vault, _ = Vault.init(tmp_path)
    (tmp_path / "f.txt").write_text("in a pack\n")
    vault.data.add("f", tmp_path / "f.txt")
    vault.objects.packs.close()
    [pack] = [p for p in vault.objects.packs.dir.iterdir() if p.suffix == ".pack"]
    pack.unlink()
    reopened = Vault.open(tmp_path / ".labvault")
    report = reopened.maintenance.fsck()
    assert not report.clean
    assert any(f"pack {pack.name} is missing" in p for p in report.problems)
    assert report.missing
    with pytest.raises(NotFound):
        reopened.objects.get_bytes(report.missing[0])
    reopened.close()
    vault.close()


def test_a_file_that_is_not_a_pack_is_left_alone(store: LocalObjectStore) -> None:
    store.put_bytes(b"real")
    store.packs.close()
    stray = store.packs.dir / "pack-stray.pack"
    stray.write_bytes(b"not a pack at all, but named like one")
    again = LocalObjectStore(store.vault_dir)
    assert again.has(sha(b"real"))
    assert stray.read_bytes().startswith(b"not a pack")
    assert not stray.read_bytes().startswith(PACK_MAGIC)


def test_a_format_1_vault_is_read_as_is_and_marked_format_2(tmp_path: Path) -> None:
    vault, _ = Vault.init(tmp_path)
    vault.close()
    config = tmp_path / ".labvault" / "config.json"
    doc = json.loads(config.read_text())
    config.write_text(json.dumps({**doc, "format_version": 1}))
    loose = sha(b"written by format 1")  # format 1 kept every object as a file of its own
    path = tmp_path / ".labvault" / "objects" / "sha256" / loose.hex[:2] / loose.hex[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"written by format 1")

    reopened = Vault.open(tmp_path)
    assert json.loads(config.read_text())["format_version"] == 2
    assert reopened.objects.get_bytes(loose) == b"written by format 1"
    assert reopened.objects.put_bytes(b"written by format 1") == loose  # not packed a second time
    assert not reopened.objects.is_packed(loose)
    assert reopened.objects.is_packed(reopened.objects.put_bytes(b"new"))
    reopened.close()


def test_closing_a_vault_lets_go_of_its_packs_so_gc_can_compact_them(tmp_path: Path) -> None:
    vault, _ = Vault.init(tmp_path)
    digests = [vault.objects.put_bytes(b"object %d " % i * 50) for i in range(40)]  # a batch each
    worker = threading.Thread(target=lambda: vault.objects.put_bytes(b"from another thread"))
    worker.start()
    worker.join()
    for digest in digests[:30]:
        vault.objects.delete(digest)
    vault.close()

    for pack in (p for p in vault.objects.packs.dir.iterdir() if p.suffix == ".pack"):
        fd = lock_pack(pack)
        assert fd is not None, f"{pack.name} is still held after Vault.close()"
        os.close(fd)
    other = LocalObjectStore(vault.dir)
    assert other.compact() > 0
    assert [other.get_bytes(d) for d in digests[30:]] == [b"object %d " % i * 50 for i in range(30, 40)]
    assert other.get_bytes(sha(b"from another thread")) == b"from another thread"
    other.close()


def test_a_closed_store_can_still_be_used(store: LocalObjectStore) -> None:
    store.put_bytes(b"before")
    store.close()
    store.close()
    assert store.put_bytes(b"after") == sha(b"after")
    assert store.get_bytes(sha(b"before")) == b"before"
    store.close()


def test_recovery_in_another_process_never_takes_a_pack_being_created(
    store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a new pack's creation and its writer's flock, recovery elsewhere may lock every pack
    it sees; the writer must not find its own pack taken."""
    real_flock = fcntl.flock
    held: list[int] = []

    def recovery_runs_first(fd: int, operation: int) -> None:
        if not held and os.readlink(f"/proc/self/fd/{fd}").startswith(str(store.packs.dir)):
            for pack in store.packs.dir.glob("pack-*.pack"):  # as recover_all elsewhere would, right now
                other = os.open(pack, os.O_RDWR)
                real_flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(other)
            held.append(-1)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", recovery_runs_first)
    try:
        assert store.put_bytes(b"first object") == sha(b"first object")
    finally:
        for fd in held:
            if fd >= 0:
                os.close(fd)
    monkeypatch.undo()
    assert held, "the writer never locked a new pack"
    store.close()
    assert LocalObjectStore(store.vault_dir).get_bytes(sha(b"first object")) == b"first object"


def test_a_new_pack_left_by_a_killed_writer_is_removed_once_old(store: LocalObjectStore) -> None:
    store.put_bytes(b"kept")
    store.close()
    left = store.packs.dir / f"pack-{'0' * 16}-dead.pack{NEW_SUFFIX}"
    left.write_bytes(PACK_MAGIC)  # killed between creating it and renaming it into view
    young = store.packs.dir / f"pack-{'1' * 16}-live.pack{NEW_SUFFIX}"
    young.write_bytes(PACK_MAGIC)
    os.utime(left, (OLD, OLD))
    again = LocalObjectStore(store.vault_dir)
    assert again.get_bytes(sha(b"kept")) == b"kept"
    assert not left.exists()
    assert young.exists()  # its writer may be about to rename it
    again.close()


def test_reading_many_objects_at_once_matches_reading_each(store: LocalObjectStore) -> None:
    """``read_verified``: packed objects in one pass, loose ones and a wrong index row on their own."""
    from labvault.storage.objects.materialize import read_verified

    blobs = [f"object {i}\n".encode() * (1 + i % 7) for i in range(40)]
    with store.batch():
        digests = [store.put_bytes(b) for b in blobs]
    big = os.urandom(2 * 1024 * 1024)  # too big to pack: a file of its own
    digests.append(store.put_bytes(big))
    blobs.append(big)
    assert store.is_packed(digests[0])
    assert not store.is_packed(digests[-1])
    want = {d.hex: b for d, b in zip(digests, blobs, strict=True)}
    assert read_verified(store, list(reversed(digests))) == want
    # A row that points at the wrong record is repaired by the one-by-one read, not believed.
    with sqlite3.connect(store.packs.index_path) as conn:
        conn.execute("UPDATE objects SET offset = offset + 1 WHERE digest = ?", (bytes.fromhex(digests[3].hex),))
    store.packs.close_all()
    assert read_verified(store, digests) == want
    corrupt_object(store, digests[5], b"X" * len(blobs[5]))
    with pytest.raises(IntegrityError, match="corrupt"):
        read_verified(store, digests)
