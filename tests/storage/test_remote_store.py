"""The remote object store as a team shares it: packs, requests counted, the cache, two machines, errors.

Everything runs against the session's moto S3 server process (``s3_server``); the requests are
counted by wrapping the store's fsspec filesystem (every call the store makes goes through it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from labvault.errors import ExternalError, IntegrityError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.objects import remote_compact, remote_writes
from labvault.storage.objects.opener import open_object_store
from labvault.storage.objects.remote import LAYOUT_MARKER, FsspecObjectStore
from tests.contracts.test_object_store import corrupt_remote
from tests.s3server import S3Server

_COUNTED = {
    "open",
    "put_file",
    "pipe_file",
    "cat_file",
    "ls",
    "info",
    "exists",
    "rm_file",
    "find",
    "glob",
    "setxattr",
    "mv",
}


class CountingFS:
    """An fsspec filesystem that counts the calls made on it (a call is one request, or one listing)."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs
        self.calls: Counter[str] = Counter()
        self.paths: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if name not in _COUNTED:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            self.paths.append((name, str(args[0]) if args else ""))
            return attr(*args, **kwargs)

        return counted

    def downloads(self) -> list[str]:
        """Paths of objects and packs fetched (index objects and listings not counted)."""
        fetched = ("cat_file", "open")  # a whole or ranged GET; a streamed GET
        return [p for name, p in self.paths if name in fetched and not p.endswith((".idx", ".json"))]


def _store(server: S3Server, bucket: str, cache: Path | None = None, size: int = 1 << 30) -> FsspecObjectStore:
    return FsspecObjectStore(
        f"s3://{bucket}/team", cache_dir=cache, cache_size=size if cache else 0, **server.storage_options()
    )


def _counted(store: FsspecObjectStore) -> CountingFS:
    counting = CountingFS(store.fs)
    store.fs = counting
    return counting


def sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def test_a_batch_of_1000_small_objects_is_a_few_puts(s3_server: S3Server) -> None:
    store = _store(s3_server, s3_server.bucket())
    fs = _counted(store)
    with store.batch():
        digests = [store.put_bytes(b"small object %d " % i * 20) for i in range(1000)]
    assert fs.calls["pipe_file"] == 3  # the layout marker, one pack, its index
    assert fs.calls["exists"] + fs.calls["info"] == 0  # small objects: no request per object
    other = _store(s3_server, store.base.split("/")[0])
    assert all(other.has(d) for d in digests[::50])
    assert other.get_bytes(digests[999]) == b"small object 999 " * 20


def test_a_large_batch_uploads_a_pack_each_16_mib_visible_only_at_the_end(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    fs = _counted(store)
    reader = _store(s3_server, bucket)
    blob = os.urandom(900 * 1024)
    with store.batch():
        digests = [store.put_bytes(blob + b"%d" % i) for i in range(40)]  # 36 MiB: three packs
        assert not reader.has(digests[0])  # uploaded already, but not visible: its index is not
    assert [n for n, p in fs.paths if n == "pipe_file" and p.endswith(".pack")].__len__() == 3
    assert all(reader.has(d) for d in digests)


def test_second_reader_with_the_same_cache_downloads_nothing(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    writer = _store(s3_server, bucket)
    with writer.batch():
        digests = [writer.put_bytes(b"file %d\n" % i * 100) for i in range(300)]
        big = writer.put_bytes(os.urandom(2 * 1024 * 1024))  # a file of its own
    first = _store(s3_server, bucket, tmp_path / "cache")
    fs1 = _counted(first)
    for d in [*digests, big]:
        first.materialize(d, tmp_path / "out.bin")
    assert len(fs1.downloads()) == 2  # the whole pack once, the large object once
    second = _store(s3_server, bucket, tmp_path / "cache")  # "a second checkout", another process
    fs2 = _counted(second)
    for d in [*digests, big]:
        assert second.get_bytes(d) == first.get_bytes(d)
    assert fs2.downloads() == []
    assert fs2.calls["cat_file"] == 0  # cache hits need no listing and no index either


def test_cache_is_bounded_and_evicts_the_least_recently_used(s3_server: S3Server, tmp_path: Path) -> None:
    store = _store(s3_server, s3_server.bucket(), tmp_path / "cache", size=200_000)
    blobs = [os.urandom(1_200_000 + i) for i in range(2)] + [os.urandom(30_000 + i) for i in range(12)]
    with store.batch():
        digests = [store.put_bytes(b) for b in blobs]
    fs = _counted(store)
    for d in digests:
        store.get_bytes(d)
    files, used = store.cache.usage()  # type: ignore[union-attr]
    assert used <= 200_000
    assert 0 < files < 12
    fs.paths.clear()
    kept = digests[-1]  # read last: most recently used, still there
    assert store.get_bytes(kept) == blobs[-1]
    assert fs.downloads() == []
    assert store.get_bytes(digests[2]) == blobs[2]  # evicted long ago: fetched again
    assert len(fs.downloads()) == 1


def test_a_corrupt_cache_entry_is_never_served(s3_server: S3Server, tmp_path: Path) -> None:
    store = _store(s3_server, s3_server.bucket(), tmp_path / "cache")
    digest = store.put_bytes(b"the real bytes")
    assert store.get_bytes(digest) == b"the real bytes"
    (pack,) = (tmp_path / "cache" / "packs").iterdir()  # a packed object: its whole pack is cached
    pack.write_bytes(pack.read_bytes().replace(b"the real bytes", b"tampered bytes"))
    fs = _counted(store)
    assert store.get_bytes(digest) == b"the real bytes"  # the cached pack is dropped, fetched again
    assert len(fs.downloads()) == 1
    assert b"the real bytes" in pack.read_bytes()
    # an object of its own, cached as a file of its own
    big = os.urandom(1024 * 1024 + 1)
    large = store.put_bytes(big)
    assert store.get_bytes(large) == big
    entry = tmp_path / "cache" / large.hex[:2] / large.hex[2:]
    entry.write_bytes(b"x" * len(big))
    assert store.get_bytes(large) == big
    assert entry.read_bytes() == big  # fetched again, verified, cached again


def test_two_machines_one_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    a = _store(s3_server, bucket, tmp_path / "a-cache")
    b = _store(s3_server, bucket, tmp_path / "b-cache")
    assert not b.has(sha(b"from a"))  # b lists the packs now, before a writes
    with a.batch():
        first = a.put_bytes(b"from a")
        keep = a.put_bytes(b"kept by a")
    assert b.has(first)  # a miss lists again
    assert b.get_bytes(first) == b"from a"
    with b.batch():
        second = b.put_bytes(b"from b")
    assert a.get_bytes(second) == b"from b"
    assert {i.digest for i in a.iter_objects()} == {first, keep, second}
    # b deletes a packed object and compacts: a, which read the old pack's index, finds it gone
    b.delete(first)
    assert b.compact() > 0
    with pytest.raises(NotFound):
        a.get_bytes(first)
    assert a.get_bytes(keep) == b"kept by a"  # moved to the new pack: a finds it there
    assert {i.digest for i in _store(s3_server, bucket).iter_objects()} == {keep, second}


def test_reput_of_an_old_object_restarts_its_age(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(s3_server, s3_server.bucket())
    digest = store.put_bytes(b"old object")
    before = store.info(digest).mtime
    fs = _counted(store)
    store.put_bytes(b"old object")  # young: a no-op
    assert fs.calls["pipe_file"] == 0
    monkeypatch.setattr(remote_writes, "REFRESH_AFTER", -1.0)  # now it counts as old
    store.refresh_after = 1e9  # a caller that keeps gc out by a lock needs no refresh
    store.put_bytes(b"old object")
    assert fs.calls["pipe_file"] == 0
    store.refresh_after = None
    store.put_bytes(b"old object")
    assert store.info(digest).mtime > before
    assert len(list(store.iter_objects())) == 1


def test_layout_marker_from_a_newer_labvault_is_refused(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    store.put_bytes(b"x")
    marker = json.loads(store.fs.cat_file(f"{bucket}/team/{LAYOUT_MARKER}"))
    assert marker == {"format": "labvault.objects", "version": 1}
    store.fs.pipe_file(f"{bucket}/team/{LAYOUT_MARKER}", b'{"format": "labvault.objects", "version": 7}')
    with pytest.raises(ValidationError) as err:
        _store(s3_server, bucket)
    assert err.value.exit_code == 2
    assert "version 7" in str(err.value)
    store.fs.pipe_file(f"{bucket}/team/{LAYOUT_MARKER}", b"[1, 2")
    with pytest.raises(ValidationError):
        _store(s3_server, bucket)


def test_a_damaged_index_is_reported_not_trusted(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    digest = store.put_bytes(b"indexed")
    (index,) = [p for p in store.fs.find(f"{bucket}/team/packs") if p.endswith(".idx")]
    data = bytearray(store.fs.cat_file(index))
    data[10] ^= 0xFF
    store.fs.pipe_file(index, bytes(data))
    other = _store(s3_server, bucket)
    assert not other.has(digest)
    problems, _ = other.check_packs()
    assert len(problems) == 1
    assert "checksum" in problems[0]


def test_a_killed_upload_is_invisible_and_compact_removes_it(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    store.put_bytes(b"committed")
    store.fs.pipe_file(f"{bucket}/team/packs/pack-0-deadbeef.pack", b"LVPACK2\ntorn")  # no index: never seen
    assert len(list(store.iter_objects())) == 1
    assert store.compact() == 0  # young: an upload may still be under way
    monkeypatch.setattr(remote_compact, "STALE_UPLOAD", -1.0)
    assert store.compact() == len(b"LVPACK2\ntorn")
    assert not store.fs.exists(f"{bucket}/team/packs/pack-0-deadbeef.pack")


def test_a_corrupt_packed_record_is_quarantined_by_verify(s3_server: S3Server) -> None:
    store = _store(s3_server, s3_server.bucket())
    good, bad = store.put_bytes(b"good record"), store.put_bytes(b"bad record!")
    corrupt_remote(store, bad, b"BAD RECORD!")
    assert store.verify(good)
    assert not store.verify(bad)
    with pytest.raises(IntegrityError):
        store.get_bytes(bad)
    store.compact()  # the corrupt record leaves its pack
    assert [i.digest for i in _store(s3_server, store.base.split("/")[0]).iter_objects()] == [good]


# -- errors at the edge, through the opener and the environment only --------------------------
def _env(monkeypatch: pytest.MonkeyPatch, server: S3Server, **overrides: str | None) -> None:
    for key, value in {**server.env(), **overrides}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


def test_opener_uses_the_environment_only(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, s3_server)
    store = open_object_store(f"s3://{s3_server.bucket()}/p")
    assert store.get_bytes(store.put_bytes(b"via the environment")) == b"via the environment"


def test_a_bucket_that_does_not_exist_is_exit_3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, s3_server)
    with pytest.raises(NotFound) as err:
        open_object_store("s3://no-such-bucket-here/p")
    assert err.value.exit_code == 3
    assert "no-such-bucket-here" in str(err.value)


def test_an_unreachable_endpoint_is_exit_7(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, s3_server, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    with pytest.raises(ExternalError) as err:
        open_object_store("s3://bucket/p")
    assert err.value.exit_code == 7
    assert "cannot reach" in str(err.value)
    assert "\n" not in str(err.value)
    assert "AWS_ENDPOINT_URL" in err.value.hint


def test_no_credentials_is_exit_7_naming_the_variables(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, s3_server, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_PROFILE=None)
    with pytest.raises(ExternalError) as err:
        open_object_store(f"s3://{s3_server.bucket()}/p")
    assert err.value.exit_code == 7
    assert "AWS_ACCESS_KEY_ID" in err.value.hint
    assert "AWS_SECRET_ACCESS_KEY" in err.value.hint


def test_a_large_object_streams_through_the_cache(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    digest = store.put_file(big)
    assert store.fs.exists(store.path_of(digest))  # a file of its own
    reader = _store(s3_server, bucket, tmp_path / "cache")
    fs = _counted(reader)
    with reader.open(digest) as f:
        assert f.read() == big.read_bytes()
    reader.materialize(digest, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == big.read_bytes()
    assert len(fs.downloads()) == 1  # streamed into the cache once; the copy came from there
    assert (tmp_path / "cache" / digest.hex[:2] / digest.hex[2:]).stat().st_size == big.stat().st_size
    # the cached copy rots: refused once (exit 5) and removed, then fetched again
    (tmp_path / "cache" / digest.hex[:2] / digest.hex[2:]).write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    with pytest.raises(IntegrityError), reader.open(digest) as f:
        f.read()
    with reader.open(digest) as f:
        assert f.read() == big.read_bytes()


def test_a_corrupt_large_object_is_never_cached_nor_materialized(s3_server: S3Server, tmp_path: Path) -> None:
    store = _store(s3_server, s3_server.bucket(), tmp_path / "cache")
    data = os.urandom(2 * 1024 * 1024)
    digest = store.put_bytes(data)
    store.fs.pipe_file(store.path_of(digest), data[:-1] + b"!")
    with pytest.raises(IntegrityError):
        store.materialize(digest, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert store.cache is not None
    assert store.cache.usage() == (0, 0)
    assert not store.has(digest)  # quarantined
    with pytest.raises(IntegrityError):
        store.get_bytes(digest)


def test_gc_on_one_machine_while_the_other_reputs_loses_nothing(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 interleavings of machine b's gc (list, delete what is old, compact) with machine a re-putting
    an old object (which a's metadata is about to refer to): the re-put copy always survives."""
    monkeypatch.setattr(remote_writes, "REFRESH_AFTER", -1.0)  # every object counts as old: every re-put refreshes
    bucket = s3_server.bucket()
    a, b, reader = _store(s3_server, bucket), _store(s3_server, bucket), _store(s3_server, bucket)
    with a.batch():
        olds = [a.put_bytes(b"old object %d" % i) for i in range(20)]
    for i, digest in enumerate(olds):
        cutoff = time.time()
        steps = ["list", "reput", "delete"] if i % 2 else ["reput", "list", "delete"]
        if i % 4 == 3:
            steps = ["list", "delete", "reput"]
        doomed: list[Digest] = []
        for step in steps:
            if step == "reput":
                with a.batch():
                    a.put_bytes(b"old object %d" % i)
            elif step == "list":
                doomed = [info.digest for info in b.iter_objects() if info.mtime <= cutoff and info.digest == digest]
            else:
                for gone in doomed:
                    b.delete(gone)
                b.compact()
        # a third machine, whose view of the packs is stale by now, still finds it
        assert reader.get_bytes(digest) == b"old object %d" % i, f"interleaving {i}: {steps}"
        assert b.has(digest), f"interleaving {i}: {steps}"  # and the gc's own view knows the new copy


def test_compact_merges_many_small_packs(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    digests = [store.put_bytes(b"batch of one %d" % i) for i in range(20)]  # a pack each
    stale = _store(s3_server, bucket)
    assert all(stale.has(d) for d in digests)
    ages = {i.digest: i.mtime for i in store.iter_objects()}
    store.delete(digests[0])
    store.compact()
    names = store.fs.ls(f"{bucket}/team/packs")
    assert len([n for n in names if n.endswith(".idx")]) == 1
    assert {i.digest: i.mtime for i in store.iter_objects()} == {d: ages[d] for d in digests[1:]}  # ages kept
    assert all(stale.get_bytes(d) == b"batch of one %d" % i for i, d in enumerate(digests) if i)  # a stale view
    with pytest.raises(NotFound):
        stale.get_bytes(digests[0])


def test_describe_says_where_and_how_much_is_cached(s3_server: S3Server, tmp_path: Path) -> None:
    store = _store(s3_server, s3_server.bucket(), tmp_path / "cache", size=1 << 20)
    store.get_bytes(store.put_bytes(b"cached once read"))
    about = store.describe()
    assert about["url"].startswith("s3://")
    assert about["layout_version"] == 1
    pack = next((tmp_path / "cache" / "packs").iterdir())
    assert about["cache"] == {
        "path": str(tmp_path / "cache"),
        "size": 1 << 20,
        "used": pack.stat().st_size,
        "objects": 1,
    }


def test_names_labvault_never_writes_in_packs_are_left_alone(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    store = _store(s3_server, bucket)
    digest = store.put_bytes(b"still readable")
    for stray in ("..idx", ".idx", "notes.txt", "pack-zz-12345678.idx", "pack-1-2.pack"):
        store.fs.pipe_file(f"{bucket}/team/packs/{stray}", b"not an index")
    reader = _store(s3_server, bucket, tmp_path / "cache")
    assert reader.get_bytes(digest) == b"still readable"
    assert [i.digest for i in reader.iter_objects()] == [digest]
    assert reader.check_packs() == ([], [])
    assert reader.lost_packs() == []
