"""The object store contract: every implementation passes this same suite.

To add a store, add one entry to ``STORES``: a function that builds it in a temp folder and says how
to corrupt an object in place and which temp files it left behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.errors import AmbiguousReference, IntegrityError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.memory import MemoryObjectStore
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.remote import FsspecObjectStore
from tests.corruption import corrupt_object
from tests.s3server import S3Server


@dataclass
class StoreCase:
    store: ObjectStore
    corrupt: Callable[[Digest, bytes], None]  # replace an object's bytes behind the store's back
    leftovers: Callable[[], list[str]]  # temp files the store left behind


def _local(tmp_path: Path, _request: pytest.FixtureRequest) -> StoreCase:
    store = LocalObjectStore.create(tmp_path / ".labvault")

    def corrupt(digest: Digest, data: bytes) -> None:
        corrupt_object(store, digest, data)

    return StoreCase(
        store, corrupt, lambda: sorted(n for n in os.listdir(store.tmp_dir) if not n.startswith("writer-"))
    )


def _memory(_tmp_path: Path, _request: pytest.FixtureRequest) -> StoreCase:
    store = MemoryObjectStore()
    return StoreCase(store, store.corrupt_for_tests, list)


def corrupt_remote(store: FsspecObjectStore, digest: Digest, data: bytes) -> None:
    """Replace an object's bytes in place in the remote store: in its pack (same length), or its file."""
    loc = store.view.lookup(bytes.fromhex(digest.hex))
    if loc is None:
        store.fs.pipe_file(store.path_of(digest), data)
        return
    assert len(data) == loc.size, "a packed object is corrupted in place, at its own length"
    path = store._pack_path(loc.pack, "pack")
    pack = bytearray(store.fs.cat_file(path))
    pack[loc.offset : loc.offset + loc.size] = data
    store.fs.pipe_file(path, bytes(pack))
    store._pack_memory.clear()


def _fsspec_memory(tmp_path: Path, _request: pytest.FixtureRequest) -> StoreCase:
    from fsspec.implementations.memory import MemoryFileSystem

    url = f"memory://{tmp_path.name}/vault"
    store = FsspecObjectStore(url)

    def leftovers() -> list[str]:
        found = [p for p in MemoryFileSystem.store if p.startswith(f"/{tmp_path.name}/vault/tmp/")]
        return sorted(found)

    return StoreCase(store, lambda d, b: corrupt_remote(store, d, b), leftovers)


def _fsspec_file(tmp_path: Path, _request: pytest.FixtureRequest) -> StoreCase:
    store = FsspecObjectStore(f"file://{tmp_path / 'remote'}")

    def leftovers() -> list[str]:
        tmp = tmp_path / "remote" / "tmp"
        return sorted(os.listdir(tmp)) if tmp.exists() else []

    return StoreCase(store, lambda d, b: corrupt_remote(store, d, b), leftovers)


def _fsspec_s3(_tmp_path: Path, request: pytest.FixtureRequest) -> StoreCase:
    """On the session's moto S3 server process (``s3_server``), a fresh bucket per test."""
    server: S3Server = request.getfixturevalue("s3_server")
    store = FsspecObjectStore(f"s3://{server.bucket()}/vault", **server.storage_options())
    return StoreCase(store, lambda d, b: corrupt_remote(store, d, b), list)  # uploads are atomic on S3


def _fsspec_s3_cached(tmp_path: Path, request: pytest.FixtureRequest) -> StoreCase:
    """The same, read through a local cache (whole packs, larger objects) as a team vault reads."""
    server: S3Server = request.getfixturevalue("s3_server")
    store = FsspecObjectStore(
        f"s3://{server.bucket()}/vault", cache_dir=tmp_path / "cache", cache_size=64 << 20, **server.storage_options()
    )
    return StoreCase(store, lambda d, b: corrupt_remote(store, d, b), list)


STORES: dict[str, Callable[[Path, pytest.FixtureRequest], StoreCase]] = {
    "fsspec-s3": _fsspec_s3,
    "fsspec-s3-cached": _fsspec_s3_cached,
    "local": _local,
    "memory": _memory,
    "fsspec-memory": _fsspec_memory,
    "fsspec-file": _fsspec_file,
}


@pytest.fixture(params=sorted(STORES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreCase]:
    made = STORES[request.param](tmp_path, request)
    yield made
    assert made.leftovers() == [], "temp files left behind"


@pytest.fixture
def store(case: StoreCase) -> ObjectStore:
    return case.store


def sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


@cache
def colliding_pair() -> tuple[bytes, bytes]:
    """Two contents whose digests share their first 8 hex digits (a birthday search, ~0.1 s)."""
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = b"collide-%d" % i
        key = hashlib.sha256(data).hexdigest()[:8]
        if key in seen:
            return seen[key], data
        seen[key] = data
        i += 1


def read_in_chunks(store: ObjectStore, digest: Digest) -> bytes:
    out = bytearray()
    with store.open(digest) as f:
        while chunk := f.read(4096):
            out += chunk
    return bytes(out)


def test_satisfies_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_bytes_names_the_object_by_its_sha256(store: ObjectStore) -> None:
    digest = store.put_bytes(b"hello")
    assert digest == sha(b"hello")
    assert store.has(digest)
    assert store.get_bytes(digest) == b"hello"
    info = store.info(digest)
    assert (info.digest, info.size) == (digest, 5)
    assert isinstance(info.mtime, float)


def test_empty_object(store: ObjectStore) -> None:
    digest = store.put_bytes(b"")
    assert digest.hex == hashlib.sha256(b"").hexdigest()
    assert store.get_bytes(digest) == b""
    with store.open(digest) as f:
        assert f.read() == b""


def test_putting_an_existing_object_is_a_no_op(store: ObjectStore) -> None:
    first = store.put_bytes(b"same")
    second = store.put_bytes(b"same")
    assert first == second
    assert [i.digest for i in store.iter_objects()] == [first]


def test_put_file_small_and_large(store: ObjectStore, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # above the whole-read threshold
    for path in (small, large):
        digest = store.put_file(path)
        assert digest == sha(path.read_bytes())
        assert store.get_bytes(digest) == path.read_bytes()
        assert store.put_file(path) == digest  # again: a no-op
    assert len(list(store.iter_objects())) == 2


def test_put_stream(store: ObjectStore) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    digest = store.put_stream(io.BytesIO(data))  # type: ignore[attr-defined]
    assert digest == sha(data)
    assert store.get_bytes(digest) == data


def test_open_reads_verified_bytes(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    digest = store.put_bytes(data)
    with store.open(digest) as f:
        assert f.read() == data
    with store.open(digest, verify=False) as f:
        assert f.read(10) == data[:10]


def test_unknown_objects_are_not_found(store: ObjectStore, tmp_path: Path) -> None:
    missing = sha(b"never stored")
    assert not store.has(missing)
    for call in (
        lambda: store.get_bytes(missing),
        lambda: store.open(missing).read(),
        lambda: store.info(missing),
        lambda: store.materialize(missing, tmp_path / "out"),
        lambda: store.resolve_prefix(missing.hex[:10]),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.exit_code == 3
    assert not (tmp_path / "out").exists()


def test_iter_objects_lists_every_object_in_digest_order(store: ObjectStore) -> None:
    digests = {store.put_bytes(b"object %d" % i) for i in range(40)}
    listed = [i.digest for i in store.iter_objects()]
    assert set(listed) == digests
    assert listed == sorted(listed, key=lambda d: d.hex)
    assert all(i.size == len(store.get_bytes(i.digest)) for i in store.iter_objects())


def test_delete(store: ObjectStore) -> None:
    keep = store.put_bytes(b"keep")
    gone = store.put_bytes(b"gone")
    store.delete(gone)
    store.delete(gone)  # deleting what is not there is fine
    assert not store.has(gone)
    assert store.has(keep)
    assert [i.digest for i in store.iter_objects()] == [keep]


def test_resolve_prefix(store: ObjectStore) -> None:
    digest = store.put_bytes(b"resolve me")
    assert store.resolve_prefix(digest.hex[:8]) == digest
    assert store.resolve_prefix(f"sha256:{digest.hex[:12]}") == digest
    assert store.resolve_prefix(digest.hex.upper()) == digest
    with pytest.raises(ValidationError) as err:
        store.resolve_prefix(digest.hex[:7])
    assert err.value.exit_code == 2


def test_ambiguous_prefix_lists_the_candidates(store: ObjectStore) -> None:
    a, b = colliding_pair()
    da, db = store.put_bytes(a), store.put_bytes(b)
    prefix = da.hex[:8]
    assert db.hex.startswith(prefix)
    with pytest.raises(AmbiguousReference) as err:
        store.resolve_prefix(prefix)
    assert err.value.exit_code == 2
    assert sorted(err.value.candidates) == sorted([str(da), str(db)])
    assert str(da) in str(err.value)
    assert str(db) in str(err.value)
    # one more digit than they share makes it unique again
    common = next(i for i, (x, y) in enumerate(zip(da.hex, db.hex, strict=True)) if x != y)
    assert store.resolve_prefix(da.hex[: common + 1]) == da


def test_batch_makes_objects_visible_only_when_it_exits(store: ObjectStore) -> None:
    with store.batch():
        first = store.put_bytes(b"one")
        with store.batch():  # nested: the outer batch decides
            second = store.put_bytes(b"two")
        assert not store.has(first)
        assert not store.has(second)
        assert store.put_bytes(b"one") == first  # a re-put inside the batch is a no-op too
    assert store.has(first)
    assert store.has(second)


def test_a_failed_batch_discards_its_objects(store: ObjectStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))

    def fail_half_way() -> None:
        with store.batch():
            store.put_bytes(b"discarded")
            store.put_file(big)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert not store.has(sha(b"discarded"))
    assert list(store.iter_objects()) == []
    # and the store works normally afterwards
    assert store.has(store.put_bytes(b"after"))


def test_a_put_from_another_thread_does_not_join_an_open_batch(store: ObjectStore) -> None:
    """Another thread's put is durable when it returns, and survives this thread's failed batch."""
    result: list[Digest] = []

    def batch_with_a_concurrent_put() -> None:
        with store.batch():
            store.put_bytes(b"mine")
            worker = threading.Thread(target=lambda: result.append(store.put_bytes(b"theirs")))
            worker.start()
            worker.join(timeout=30)
            assert result, "the other thread's put did not return"
            assert store.has(result[0])
            raise RuntimeError("this thread's batch fails")

    with pytest.raises(RuntimeError):
        batch_with_a_concurrent_put()
    assert store.has(result[0])
    assert not store.has(sha(b"mine"))


def test_corrupt_object_is_refused_and_never_served_again(case: StoreCase) -> None:
    store = case.store
    digest = store.put_bytes(b"precious bytes")
    case.corrupt(digest, b"rotten bytes!!")
    assert store.get_bytes(digest, verify=False) == b"rotten bytes!!"  # unverified reads do not check
    with pytest.raises(IntegrityError) as err:
        store.get_bytes(digest)
    assert err.value.exit_code == 5
    assert str(digest) in str(err.value)
    assert not store.has(digest)
    with pytest.raises(IntegrityError, match="quarantined"):  # still corrupt (exit 5), not "not stored"
        store.get_bytes(digest)


def test_corruption_is_caught_by_a_streaming_read(case: StoreCase) -> None:
    store = case.store
    digest = store.put_bytes(b"a" * 50_000)
    case.corrupt(digest, b"a" * 49_999 + b"b")
    with pytest.raises(IntegrityError):
        read_in_chunks(store, digest)
    assert not store.has(digest)


def test_corrupt_object_is_not_materialized(case: StoreCase, tmp_path: Path) -> None:
    store = case.store
    digest = store.put_bytes(b"good")
    case.corrupt(digest, b"evil")
    dest = tmp_path / "checkout.txt"
    with pytest.raises(IntegrityError):
        store.materialize(digest, dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".checkout")] == []


def test_verify_quarantines_a_corrupt_object(case: StoreCase) -> None:
    store = case.store
    good = store.put_bytes(b"fine")
    bad = store.put_bytes(b"precious bytes")
    case.corrupt(bad, b"rotten bytes!!")
    assert store.verify(good)
    assert not store.verify(bad)
    assert not store.has(bad)


def test_touch_refreshes_an_objects_age(store: ObjectStore) -> None:
    digest = store.put_bytes(b"old")
    before = store.info(digest).mtime
    s3 = isinstance(store, FsspecObjectStore) and "s3" in store.fs.protocol
    time.sleep(1.1 if s3 else 0.02)  # S3 keeps whole seconds
    with store.batch():
        store.touch(digest)
        store.touch(sha(b"never stored"))  # a no-op
    assert store.info(digest).mtime > before
    assert store.get_bytes(digest) == b"old"


def test_housekeeping_of_a_fresh_store(store: ObjectStore) -> None:
    with store.gc_lock(timeout=1):
        assert store.compact() == 0
    assert list(store.iter_temp_files()) == []
    assert store.lost_packs() == []


def test_materialize_copy(store: ObjectStore, tmp_path: Path) -> None:
    digest = store.put_bytes(b"model weights")
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "out.bin"
    dest.write_bytes(b"old content")  # replaced atomically
    store.materialize(digest, dest)
    assert dest.read_bytes() == b"model weights"
    os.chmod(dest, 0o644)
    dest.write_bytes(b"edited by the user")
    assert store.get_bytes(digest) == b"model weights"
    assert [p.name for p in dest.parent.iterdir()] == ["out.bin"]


@given(data=st.binary(max_size=4096))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_put_get_round_trip(store: ObjectStore, data: bytes) -> None:
    digest = store.put_bytes(data)
    assert digest == sha(data)
    assert store.get_bytes(digest) == data
    assert store.info(digest).size == len(data)
    assert store.resolve_prefix(digest.hex[:16]) == digest
