"""The local object store beyond the shared contract: layout, refresh, quarantine, materialise
modes, the streamed path for large files, the gc lock, and a full disk (on a small tmpfs)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labvault.errors import IntegrityError, LockedError, NotFound, StorageError
from labvault.refs import Digest
from labvault.storage.locks import file_lock
from labvault.storage.objects import fileio
from labvault.storage.objects.local import LocalObjectStore
from tests.corruption import age_object, corrupt_object
from tests.e2e.conftest import LABVAULT
from tests.storage.test_disk_full import small_disk_at

BIG = 1024 * 1024 + 1  # larger than this is a file of its own; up to it, a record in a pack


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore.create(tmp_path / ".labvault")


def sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


corrupt = corrupt_object


def _temp_files(tmp_dir: Path) -> list[str]:
    """What is in tmp/ besides the writers' locks."""
    return [n for n in os.listdir(tmp_dir) if not n.startswith("writer-")]


def test_large_objects_are_files_named_by_algorithm_and_sharded_by_two_hex_digits(store: LocalObjectStore) -> None:
    data = os.urandom(BIG)
    digest = store.put_bytes(data)
    path = store.vault_dir / "objects" / "sha256" / digest.hex[:2] / digest.hex[2:]
    assert path.read_bytes() == data
    assert store.path_of(digest) == path
    assert not store.is_packed(digest)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444  # objects are immutable
    assert _temp_files(store.tmp_dir) == []


def test_small_objects_are_records_in_one_pack(store: LocalObjectStore) -> None:
    with store.batch():
        digests = [store.put_bytes(b"small %d" % i) for i in range(100)]
    packs = sorted(p.name for p in store.packs.dir.iterdir() if p.suffix == ".pack")
    assert len(packs) == 1
    assert not list(store.root.iterdir())  # no file per object
    for i, digest in enumerate(digests):
        path, offset, size = store.locate(digest)
        assert path.name == packs[0]
        with open(path, "rb") as f:
            f.seek(offset)
            assert f.read(size) == b"small %d" % i
    assert [i.digest for i in store.iter_objects()] == sorted(digests, key=lambda d: d.hex)
    # the next process appends to the same pack rather than starting one of its own
    store.packs.close()
    again = LocalObjectStore(store.vault_dir)
    extra = again.put_bytes(b"one more")
    assert again.locate(extra)[0].name == packs[0]


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])
def test_re_put_is_a_no_op_that_refreshes_mtime(store: LocalObjectStore, tmp_path: Path, size: int) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    digest = store.put_file(src)
    path, offset, _ = store.locate(digest)
    age_object(store, digest, 1_000_000)  # an object last written in 1970
    assert store.info(digest).mtime == pytest.approx(1_000_000)
    length = path.stat().st_size
    before = time.time()
    assert store.put_file(src) == digest
    assert store.locate(digest) == (path, offset, size)  # not rewritten
    assert path.stat().st_size == length
    assert store.info(digest).mtime >= before - 1  # but young again, so a running gc keeps it
    assert _temp_files(store.tmp_dir) == []


def test_corrupt_object_is_quarantined_and_never_served_again(store: LocalObjectStore) -> None:
    digest = store.put_bytes(b"the original")
    corrupt(store, digest, b"bit rot here")
    with pytest.raises(IntegrityError) as err:
        store.get_bytes(digest)
    assert err.value.exit_code == 5
    assert "quarantined" in str(err.value)
    assert "fsck" in err.value.hint
    assert not store.has(digest)
    quarantined = [p for p in store.quarantine_dir.iterdir() if p.name.startswith(digest.hex)]
    assert [p.read_bytes() for p in quarantined] == [b"bit rot here"]  # kept for inspection
    # Once quarantined it is still corrupt (exit 5), not "not stored", and says where it went.
    with pytest.raises(IntegrityError, match=r"quarantined to .*quarantine"):
        store.get_bytes(digest)
    with pytest.raises(IntegrityError, match="quarantined to"):
        store.open(digest)
    # putting the right bytes again heals the store
    assert store.put_bytes(b"the original") == digest
    assert store.get_bytes(digest) == b"the original"


def test_verify_and_streaming_reads_quarantine_too(store: LocalObjectStore) -> None:
    a = store.put_bytes(b"a" * 100)
    b = store.put_bytes(b"b" * 100)
    corrupt(store, a, b"x" * 100)
    assert store.verify(b)
    assert not store.verify(a)
    assert not store.has(a)
    corrupt(store, b, b"y" * 100)
    reader = store.open(b)
    with pytest.raises(IntegrityError):
        reader.read()
    reader.close()
    assert not store.has(b)
    assert len(list(store.quarantine_dir.iterdir())) == 2


@pytest.mark.parametrize("mode", ["copy", "reflink"])
def test_materialized_copies_are_independent_of_the_store(store: LocalObjectStore, tmp_path: Path, mode: str) -> None:
    digest = store.put_bytes(b"checked out")
    dest = tmp_path / "work" / "file.txt"
    dest.parent.mkdir()
    store.materialize(digest, dest, mode=mode)  # type: ignore[arg-type]
    assert dest.read_bytes() == b"checked out"
    assert dest.stat().st_ino != store.locate(digest)[0].stat().st_ino
    os.chmod(dest, 0o644)
    with open(dest, "r+b") as f:  # edit in place, as an editor or a training script would
        f.write(b"CHANGED")
    assert store.get_bytes(digest) == b"checked out"
    assert store.verify(digest)
    assert os.listdir(dest.parent) == ["file.txt"]


def test_reflink_falls_back_to_a_copy_on_this_filesystem(store: LocalObjectStore, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    digest = store.put_bytes(data)
    with open(store.path_of(digest), "rb") as src, open(tmp_path / "probe", "wb") as out:
        try:
            fcntl.ioctl(out.fileno(), 0x40049409, src.fileno())  # FICLONE
            cloned = True
        except OSError as exc:
            cloned = exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY)
    if cloned:
        pytest.skip("this filesystem supports reflinks; the fallback is not exercised")
    store.materialize(digest, tmp_path / "out", mode="reflink")
    assert (tmp_path / "out").read_bytes() == data


def test_hardlink_shares_a_large_object_and_copies_a_packed_one(store: LocalObjectStore, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    digest = store.put_bytes(data)
    dest = tmp_path / "linked.bin"
    store.materialize(digest, dest, mode="hardlink")
    assert dest.stat().st_ino == store.path_of(digest).stat().st_ino
    assert dest.read_bytes() == data
    small = store.put_bytes(b"packed")
    store.materialize(small, tmp_path / "small.txt", mode="hardlink")
    assert (tmp_path / "small.txt").read_bytes() == b"packed"
    assert (tmp_path / "small.txt").stat().st_nlink == 1


@pytest.mark.parametrize("mode", ["copy", "hardlink", "reflink"])
def test_materialize_refuses_corrupt_objects_in_every_mode(store: LocalObjectStore, tmp_path: Path, mode: str) -> None:
    digest = store.put_bytes(b"fine")
    corrupt(store, digest, b"FINE")
    big = store.put_bytes(b"f" * BIG)
    corrupt(store, big, b"F" * BIG)
    with pytest.raises(IntegrityError):
        store.materialize(big, tmp_path / "big", mode=mode)  # type: ignore[arg-type]
    dest = tmp_path / "out" / "x"
    dest.parent.mkdir()
    with pytest.raises(IntegrityError):
        store.materialize(digest, dest, mode=mode)  # type: ignore[arg-type]
    assert os.listdir(dest.parent) == []


def test_materialize_into_a_missing_folder_is_a_storage_error(store: LocalObjectStore, tmp_path: Path) -> None:
    digest = store.put_bytes(b"x")
    with pytest.raises(StorageError):
        store.materialize(digest, tmp_path / "no" / "such" / "dir" / "x")


def test_large_file_round_trip_on_the_streamed_path(store: LocalObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "large.bin"
    src.write_bytes(data)
    digest = store.put_file(src)
    assert digest == sha(data)
    assert store.path_of(digest).read_bytes() == data
    with store.open(digest) as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest.hex


def test_streamed_copy_in_many_unaligned_steps(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hashing thread follows the copy step by step; steps need not be page-aligned."""
    monkeypatch.setattr(fileio, "_COPY_STEP", 1024 * 1024 + 4097)
    data = os.urandom(7 * 1024 * 1024 + 5)
    src = tmp_path / "large.bin"
    src.write_bytes(data)
    assert store.put_file(src) == sha(data)
    assert store.get_bytes(sha(data)) == data


def test_streamed_copy_falls_back_when_the_kernel_cannot_copy(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    data = os.urandom(2 * 1024 * 1024 + 1)
    src = tmp_path / "large.bin"
    src.write_bytes(data)
    assert store.put_file(src) == sha(data)
    assert store.get_bytes(sha(data)) == data


def test_put_stream_accepts_a_reader_without_readinto(store: LocalObjectStore) -> None:
    class Chunks:
        def __init__(self, parts: list[bytes]) -> None:
            self.parts = parts

        def read(self, _n: int = -1) -> bytes:
            return self.parts.pop(0) if self.parts else b""

    digest = store.put_stream(Chunks([b"abc", b"def" * 1000]))  # type: ignore[arg-type]
    assert digest == sha(b"abc" + b"def" * 1000)


def test_put_file_of_a_missing_file_is_not_found(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        store.put_file(tmp_path / "nope.txt")
    assert err.value.exit_code == 3


def test_a_batch_holds_the_gc_lock_shared(store: LocalObjectStore) -> None:
    with store.batch():
        store.put_bytes(b"held")
        with pytest.raises(LockedError), file_lock(store.gc_lock_path, timeout=0.1):
            pass
        with file_lock(store.gc_lock_path, shared=True, timeout=0.1):  # other writers are welcome
            pass
    with file_lock(store.gc_lock_path, timeout=0.1):
        pass


def test_a_failed_write_leaves_no_temp_file(store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int, _data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="disk full") as err:
        store.put_bytes(b"no room")
    assert err.value.exit_code == 7
    assert _temp_files(store.tmp_dir) == []
    assert list(store.iter_objects()) == []


# -- a real full disk -------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test (needs root: skipped otherwise, failed under CI=true)."""
    mnt = tmp_path / "small-disk"
    small_disk_at(mnt)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _labvault(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    return subprocess.run([LABVAULT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("size", [1536 * 1024, 700 * 1024], ids=["streamed", "whole-read"])
def test_disk_full_is_one_clean_error_and_leaves_nothing_behind(small_disk: Path, tmp_path: Path, size: int) -> None:
    assert _labvault("init", cwd=small_disk).returncode == 0
    vault = small_disk / ".labvault"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - 256 * 1024))  # leave 256 KiB: less than the file to put
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(size))

    proc = _labvault("object", "put", str(src), cwd=small_disk)
    assert proc.returncode == 7, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: disk full"), proc.stderr
    assert [line for line in lines if not line.startswith("hint: ")] == [lines[0]]  # one line (+ its hint)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert _temp_files(vault / "tmp") == []  # temp file cleaned
    assert list(LocalObjectStore(vault).iter_objects()) == []  # no partial object

    filler.unlink()  # free the space: the same put now succeeds
    proc = _labvault("object", "put", str(src), cwd=small_disk)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(sha(src.read_bytes()))
    assert _labvault("fsck", cwd=small_disk).returncode == 0


@pytest.mark.parametrize("mode", ["copy", "reflink"])
def test_materialize_large_objects(store: LocalObjectStore, tmp_path: Path, mode: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    digest = store.put_bytes(data)
    store.materialize(digest, tmp_path / "big.bin", mode=mode)  # type: ignore[arg-type]
    assert (tmp_path / "big.bin").read_bytes() == data
    corrupt(store, digest, data[:-1] + b"!")
    with pytest.raises(IntegrityError):
        store.materialize(digest, tmp_path / "again.bin", mode=mode)  # type: ignore[arg-type]
    assert not (tmp_path / "again.bin").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a process that has threads
def test_a_store_used_on_both_sides_of_a_fork(store: LocalObjectStore) -> None:
    """Worker pools fork: parent and child, with one store object, must not collide on temp names."""
    store.put_bytes(b"before the fork")
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            for i in range(50):
                store.put_bytes(b"child %d" % i)
        except BaseException:
            code = 1
        os._exit(code)
    for i in range(50):
        store.put_bytes(b"parent %d" % i)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(store.has(sha(b"child %d" % i)) and store.has(sha(b"parent %d" % i)) for i in range(50))


def test_durability_is_paid_per_batch(store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small objects: one fdatasync of the pack per batch (and its folder once, when the pack is new).
    Many large objects: two syncfs calls for the whole batch and no fsync per object. A few large
    objects: an fsync per file and per folder, and no syncfs (which would wait for every writer)."""
    from labvault.storage.objects import loose

    calls: list[str] = []
    monkeypatch.setattr(loose, "syncfs", lambda on: calls.append(f"syncfs {Path(on).name}"))
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append("fdatasync"), real_fdatasync(fd))[1])
    with store.batch():
        many = [store.put_bytes(b"object %d" % i) for i in range(50)]
    assert calls == ["fdatasync", "fsync"]  # the pack, then its new folder entry
    assert all(store.has(d) for d in many)
    calls.clear()
    with store.batch():
        more = [store.put_bytes(b"more %d" % i) for i in range(50)]
    assert calls == ["fdatasync"]
    assert all(store.has(d) for d in more)

    calls.clear()
    with store.batch():
        large = [store.put_bytes(bytes([i]) * BIG) for i in range(10)]
    assert calls == ["syncfs tmp", "syncfs sha256"]
    assert all(store.has(d) for d in large)

    calls.clear()
    existing_shards = set(os.listdir(store.root))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    with store.batch():
        small = store.put_bytes(b"one more")
        one = store.put_file(big)  # flushed while it was hashed: not fsynced again
    new_shard = one.hex[:2] not in existing_shards
    assert calls.count("fdatasync") == 2  # the pack, and the large file as it was copied
    assert calls.count("fsync") == 1 + (1 if new_shard else 0)  # its folder, and the root for a new folder
    assert not [c for c in calls if c.startswith("syncfs")]
    assert store.has(small)
    assert store.has(one)
