"""Working copy: status with the stat cache (racily clean, changing files), checkout, the lock file."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from labvault.errors import Conflict, IntegrityError
from labvault.refs import Digest
from labvault.services.snapshots import statcache
from labvault.services.snapshots.flat import FlatTree
from labvault.services.snapshots.statcache import FileChanged, StatCache, hash_file
from labvault.vault import Vault
from tests.corruption import corrupt_object

from .conftest import write_tree


def _status(vault: Vault) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    (s,) = vault.data.status()
    return s.added, s.removed, s.modified


def test_status_clean_then_changes(vault: Vault, dataset: Path) -> None:
    vault.data.add("raw", dataset)
    (s,) = vault.data.status()
    assert s.clean
    assert s.ref == "data:raw@v1"
    assert s.path == "data"
    (dataset / "notes" / "readme.txt").write_text("other\n")
    (dataset / "images" / "b.bin").unlink()
    (dataset / "new.txt").write_text("n")
    os.unlink(dataset / "latest.csv")
    (dataset / "latest.csv").symlink_to("events.jsonl")
    assert _status(vault) == (("new.txt",), ("images/b.bin",), ("latest.csv", "notes/readme.txt"))


def test_status_same_size_change_is_seen(vault: Vault, dataset: Path) -> None:
    vault.data.add("raw", dataset)
    vault.data.status()  # warms the cache
    (dataset / "notes" / "readme.txt").write_text("HELLO\n")  # same size
    assert _status(vault)[2] == ("notes/readme.txt",)


def test_status_uses_the_stat_cache(vault: Vault, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault.data.add("raw", dataset)
    vault.data.status()
    calls: list[object] = []
    real = statcache.hash_file
    monkeypatch.setattr("labvault.services.snapshots.status.hash_file", lambda p: calls.append(p) or real(p))
    assert vault.data.status()[0].clean
    assert calls == []  # nothing re-read


def test_an_unchanged_folder_is_answered_in_bulk(vault: Vault, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an add (and a status to settle racily clean files), "clean" needs no per-file lookup;
    a change of any kind, even one that keeps size and mtime, still takes the per-file path."""
    vault.data.add("raw", dataset)
    time.sleep(0.01)
    vault.data.status()
    per_file: list[int] = []
    real = FlatTree.index
    monkeypatch.setattr(FlatTree, "index", property(lambda self: per_file.append(1) or real.fget(self)))  # type: ignore[attr-defined]
    assert vault.data.status()[0].clean
    assert per_file == []  # the bulk answer: the per-file loop never indexed the snapshot's files
    target = dataset / "notes" / "readme.txt"
    st = target.stat()
    target.write_text("HELLO\n")  # same size...
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the same mtime: the ctime and inode tell
    assert _status(vault)[2] == ("notes/readme.txt",)
    assert per_file  # the per-file path
    target.write_text("hello\n")  # back to what was snapshotted
    assert vault.data.status()[0].clean


def test_racily_clean_entries_are_not_trusted(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    sha, key = hash_file(f)
    cache = StatCache(tmp_path / "c.bin")
    cache.put("f", key, sha)
    cache.save(stamp_ns=key[2])
    assert StatCache.load(tmp_path / "c.bin").lookup("f", key) is None
    cache = StatCache.load(tmp_path / "c.bin")
    cache.save(stamp_ns=key[2])  # the file was modified in the same tick as the stamp
    assert StatCache.load(tmp_path / "c.bin").lookup("f", key) is None
    cache.save(stamp_ns=max(key[2], key[3]) + 1)
    assert StatCache.load(tmp_path / "c.bin").lookup("f", key) is not None


def test_a_file_changing_while_hashed_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"a" * 4096)
    real = os.fstat
    calls = []

    def fstat(fd: int) -> os.stat_result:
        calls.append(fd)
        if len(calls) == 2:
            with open(f, "ab") as out:
                out.write(b"more")
        return real(fd)

    monkeypatch.setattr(statcache.os, "fstat", fstat)
    with pytest.raises(FileChanged):
        hash_file(f)


def test_a_file_changing_during_add_stores_nothing_wrong(
    vault: Vault, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fstat
    calls = []

    def fstat(fd: int) -> os.stat_result:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("readme.txt"):
            calls.append(fd)
        if len(calls) == 2:
            with open(dataset / "notes" / "readme.txt", "a") as out:
                out.write("appended")
        return real(fd)

    monkeypatch.setattr(statcache.os, "fstat", fstat)
    with pytest.raises(FileChanged):
        vault.data.add("raw", dataset / "notes" / "readme.txt")
    assert vault.data.datasets() == []


def test_checkout_restores_exact_bytes(vault: Vault, dataset: Path) -> None:
    original = {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    vault.data.add("raw", dataset)
    shutil.rmtree(dataset)
    (result,) = vault.data.checkout("data:raw@v1")
    assert result.written == 5
    restored = {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    assert restored == original
    assert os.readlink(dataset / "latest.csv") == "train.csv"
    assert vault.data.status()[0].clean


def test_checkout_to_another_path_and_single_files(vault: Vault, dataset: Path, project: Path) -> None:
    vault.data.add("raw", dataset)
    vault.data.checkout("data:raw", project / "copy")
    assert (project / "copy" / "images" / "a.bin").read_bytes() == b"\x00" * 100
    write_tree(project, {"one.csv": "a\n1\n"})
    vault.data.add("one", project / "one.csv")
    vault.data.checkout("data:one@v1", project / "renamed.csv")
    assert (project / "renamed.csv").read_text() == "a\n1\n"


def test_checkout_refuses_to_overwrite_local_modifications(vault: Vault, dataset: Path) -> None:
    vault.data.add("raw", dataset)
    (dataset / "notes" / "readme.txt").write_text("v2\n")
    vault.data.add("raw", dataset)
    (dataset / "notes" / "readme.txt").write_text("local edit\n")
    (dataset / "scratch.txt").write_text("mine")
    with pytest.raises(Conflict, match=r"2 local modification\(s\): data/notes/readme.txt, data/scratch.txt"):
        vault.data.checkout("data:raw@v1")
    assert (dataset / "notes" / "readme.txt").read_text() == "local edit\n"  # nothing written
    vault.data.checkout("data:raw@v1", force=True)
    assert (dataset / "notes" / "readme.txt").read_text() == "hello\n"
    assert not (dataset / "scratch.txt").exists()
    assert vault.data.status()[0].ref == "data:raw@v1"


def test_switching_versions_of_a_clean_copy_needs_no_force(vault: Vault, dataset: Path) -> None:
    vault.data.add("raw", dataset)
    (dataset / "notes" / "readme.txt").write_text("v2\n")
    vault.data.add("raw", dataset)
    vault.data.checkout("data:raw@v1")
    assert (dataset / "notes" / "readme.txt").read_text() == "hello\n"
    vault.data.checkout("data:raw@v2")
    assert (dataset / "notes" / "readme.txt").read_text() == "v2\n"


def test_checkout_without_arguments_follows_the_lock_file(vault: Vault, dataset: Path, project: Path) -> None:
    vault.data.add("raw", dataset)
    old_lock = (project / "labvault.lock").read_text()  # what an older git commit holds
    (dataset / "notes" / "readme.txt").write_text("v2\n")
    write_tree(project, {"extra.txt": "e"})
    vault.data.add("raw", dataset)
    vault.data.add("extra", project / "extra.txt")
    (project / "labvault.lock").write_text(old_lock)  # `git checkout <old commit>`
    results = vault.data.checkout()
    assert [r.ref for r in results] == ["data:raw@v1"]
    assert (dataset / "notes" / "readme.txt").read_text() == "hello\n"
    assert (project / "labvault.lock").read_text() == old_lock


def test_checkout_names_a_corrupt_object(vault: Vault, dataset: Path) -> None:
    snap, _ = vault.data.add("raw", dataset)
    sha = next(f.sha256 for f in vault.data.get(snap.ref).files if f.path == "images/a.bin")
    corrupt_object(vault.objects, Digest(sha.hex), b"\x02" * 100)
    shutil.rmtree(dataset)
    with pytest.raises(IntegrityError, match=r"images/a.bin.*corrupt") as info:
        vault.data.checkout(snap.ref)
    assert info.value.exit_code == 5
    assert "fsck" in info.value.hint


@pytest.mark.parametrize("removed", [False, True], ids=["patched-in-place", "rebuilt"])
def test_stat_cache_saves_re_hashed_entries_whether_or_not_entries_went(tmp_path: Path, removed: bool) -> None:
    path = tmp_path / "c.bin"
    cache = StatCache(path)
    keys = {f"d/f{i}": (i, 10 + i, 100 + i, 100 + i) for i in range(50)}
    for rel, key in keys.items():
        cache.put(rel, key, bytes([len(rel)]) * 32, {"record_count": 1} if rel == "d/f7" else None)
    cache.save(10_000)
    loaded = StatCache.load(path)
    changed = (7, 99, 5000, 5000)
    loaded.put("d/f7", changed, b"\x07" * 32, None)  # re-hashed: no longer tabular
    loaded.put("d/f8", (8, 18, 108, 108), b"\x08" * 32, {"record_count": 2})
    keep = {**keys, "d/f7": changed}
    if removed:
        del keep["d/f9"]
    loaded.retain(keep)
    loaded.save(10_000)
    again = StatCache.load(path)
    assert again.lookup("d/f7", changed) == (b"\x07" * 32, None)
    assert again.lookup("d/f7", keys["d/f7"]) is None
    assert again.lookup("d/f8", (8, 18, 108, 108)) == (b"\x08" * 32, {"record_count": 2})
    assert again.lookup("d/f1", keys["d/f1"]) == (bytes([4]) * 32, None)
    assert (again.lookup("d/f9", keys["d/f9"]) is None) is removed


def test_a_throwaway_checkout_keeps_no_stat_cache(vault: Vault, dataset: Path, tmp_path: Path) -> None:
    vault.data.add("raw", dataset)
    stat_dir = vault.dir / "cache" / "stat"
    before = sorted(stat_dir.iterdir())
    for i in range(3):
        (result,) = vault.data.checkout("data:raw@v1", tmp_path / f"ws-{i}", force=True, cache_stats=False)
        assert result.written == 5
    assert sorted(stat_dir.iterdir()) == before
    vault.data.checkout("data:raw@v1", tmp_path / "kept")  # a checkout kept for use has its baseline recorded
    assert len(list(stat_dir.iterdir())) == len(before) + 1
