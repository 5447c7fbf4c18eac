"""fsck and gc, on SQLite and PostgreSQL vaults, including gc racing a writer."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from labvault.errors import IntegrityError, LockedError
from labvault.refs import Digest
from labvault.services.maintenance import Maintenance, parse_duration
from labvault.storage.meta.repos.object_refs import RefKind, add_refs
from labvault.storage.objects.tree import TreeEntry, put_tree
from labvault.vault import Vault
from tests.corruption import age_object, flip_byte

OLD = 1_000_000.0  # an mtime in 1970: older than any grace period


def sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def refer(vault: Vault, owner: str, *refs: tuple[Digest, RefKind]) -> None:
    with vault.meta.transaction() as conn:
        add_refs(conn, owner, list(refs))


def age(vault: Vault, *digests: Digest) -> None:
    for d in digests:
        age_object(vault.objects, d, OLD)


def corrupt(vault: Vault, digest: Digest) -> None:
    flip_byte(vault.objects, digest)


def file_entry(name: str, digest: Digest, size: int = 1) -> TreeEntry:
    return TreeEntry(name, "file", digest, size)


def dir_entry(name: str, digest: Digest) -> TreeEntry:
    return TreeEntry(name, "dir", digest, 0)


# -- fsck -------------------------------------------------------------------------------------


def test_fsck_clean(any_vault: Vault) -> None:
    assert any_vault.maintenance.fsck().clean
    a = any_vault.objects.put_bytes(b"a")
    refer(any_vault, "data:x@v1", (a, "blob"))
    report = any_vault.maintenance.fsck()
    assert report.clean
    assert (report.checked, report.bytes_checked) == (1, 1)
    assert report.corrupt == report.missing == report.quarantined == ()


def test_fsck_finds_and_quarantines_corrupt_objects(any_vault: Vault) -> None:
    good = any_vault.objects.put_bytes(b"good")
    bad = any_vault.objects.put_bytes(b"bad")
    refer(any_vault, "data:x@v1", (bad, "blob"))
    corrupt(any_vault, bad)
    report = any_vault.maintenance.fsck()
    assert not report.clean
    assert report.corrupt == (bad,)
    assert report.quarantined == (bad,)
    assert report.missing == ()  # reported once, as corrupt
    assert not any_vault.objects.has(bad)
    assert any_vault.objects.has(good)
    # the next fsck sees the referenced object as missing: still not clean until it is restored
    again = any_vault.maintenance.fsck()
    assert again.missing == (bad,)
    any_vault.objects.put_bytes(b"bad")
    assert any_vault.maintenance.fsck().clean


def test_fsck_finds_referenced_objects_that_are_not_stored(any_vault: Vault) -> None:
    ghost = sha(b"never stored")
    refer(any_vault, "run:abcdef123456", (ghost, "blob"))
    refer(any_vault, "data:y@v2", (ghost, "blob"))
    report = any_vault.maintenance.fsck()
    assert report.missing == (ghost,)
    assert not report.clean
    assert sorted(any_vault.maintenance.owners_of(ghost)) == ["data:y@v2", "run:abcdef123456"]


def test_fsck_finds_a_missing_child_of_a_referenced_tree(any_vault: Vault) -> None:
    store = any_vault.objects
    present = store.put_bytes(b"present")
    ghost = sha(b"lost child")
    sub = put_tree(store, [file_entry("lost.bin", ghost)])
    root = put_tree(store, [file_entry("ok.bin", present), dir_entry("sub", sub)])
    refer(any_vault, "data:tree@v1", (root, "tree"))
    report = any_vault.maintenance.fsck()
    assert report.missing == (ghost,)
    store.delete(sub)  # a whole subtree gone
    assert any_vault.maintenance.fsck().missing == (sub,)


def test_fsck_reports_an_unreadable_referenced_tree(vault: Vault) -> None:
    not_a_tree = vault.objects.put_bytes(b"this is not json")
    refer(vault, "data:z@v1", (not_a_tree, "tree"))
    report = vault.maintenance.fsck()
    assert not report.clean
    assert any(str(not_a_tree) in p for p in report.problems)


# -- gc ---------------------------------------------------------------------------------------


def test_gc_deletes_only_unreferenced_objects_older_than_the_grace(any_vault: Vault) -> None:
    store = any_vault.objects
    old_orphan = store.put_bytes(b"old orphan")
    young_orphan = store.put_bytes(b"young orphan")
    referenced = store.put_bytes(b"referenced")
    age(any_vault, old_orphan, referenced)
    refer(any_vault, "data:k@v1", (referenced, "blob"))
    report = any_vault.maintenance.gc(grace=3600)
    assert report.deleted == (old_orphan,)
    assert report.bytes_freed == len(b"old orphan")
    assert (report.kept_referenced, report.kept_young) == (1, 1)
    assert not store.has(old_orphan)
    assert store.has(young_orphan)
    assert store.has(referenced)


def test_gc_keeps_everything_reachable_from_a_referenced_tree(any_vault: Vault) -> None:
    store = any_vault.objects
    leaf = store.put_bytes(b"deep leaf")
    top = store.put_bytes(b"top file")
    orphan = store.put_bytes(b"orphan")
    deep = put_tree(store, [file_entry("leaf", leaf)])
    mid = put_tree(store, [dir_entry("deep", deep)])
    root = put_tree(store, [file_entry("top", top), dir_entry("mid", mid)])
    age(any_vault, leaf, top, orphan, deep, mid, root)
    refer(any_vault, "data:t@v1", (root, "tree"))
    report = any_vault.maintenance.gc(grace=0)
    assert report.deleted == (orphan,)
    assert report.kept_referenced == 5
    assert all(store.has(d) for d in (leaf, top, deep, mid, root))


def test_gc_refuses_to_guess_when_a_referenced_tree_cannot_be_read(vault: Vault) -> None:
    """Objects below an unreadable tree cannot be known: deleting 'unreferenced' ones could lose data."""
    store = vault.objects
    kept = store.put_bytes(b"under a good subtree")
    good = put_tree(store, [file_entry("kept", kept)])
    broken = store.put_bytes(b"{not a tree")
    root = put_tree(store, [dir_entry("a", good), dir_entry("b", broken)])
    age(vault, kept, good, broken, root)
    refer(vault, "data:r@v1", (root, "tree"))
    with pytest.raises(IntegrityError) as err:
        vault.maintenance.gc(grace=0)
    assert err.value.exit_code == 5
    assert "fsck" in err.value.hint
    assert store.has(kept)
    store.delete(broken)  # a referenced tree that is missing: the same refusal
    with pytest.raises(IntegrityError):
        vault.maintenance.gc(grace=0)
    assert store.has(kept)


def test_gc_dry_run_deletes_nothing(any_vault: Vault) -> None:
    orphan = any_vault.objects.put_bytes(b"orphan")
    age(any_vault, orphan)
    stale = any_vault.objects.tmp_dir / "obj-1-stale"
    stale.write_bytes(b"partial")
    os.utime(stale, (OLD, OLD))
    report = any_vault.maintenance.gc(grace=60, dry_run=True)
    assert report.dry_run
    assert report.deleted == (orphan,)
    assert report.temp_files_removed == 1
    assert any_vault.objects.has(orphan)
    assert stale.exists()


def test_gc_removes_stale_temp_files_only(vault: Vault) -> None:
    stale = vault.objects.tmp_dir / "obj-1-stale"
    fresh = vault.objects.tmp_dir / "obj-2-fresh"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"just written")
    os.utime(stale, (OLD, OLD))
    report = vault.maintenance.gc(grace=3600)
    assert report.temp_files_removed == 1
    assert not stale.exists()
    assert fresh.exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("14d", 1209600), ("2w", 1209600)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "-1", "10y", "abc", "1.2.3", "5 m"])
def test_parse_duration_refuses_nonsense(bad: str) -> None:
    with pytest.raises(Exception) as err:  # noqa: PT011 - the class is checked below
        parse_duration(bad)
    assert getattr(err.value, "exit_code", None) == 2


# -- gc racing a writer -----------------------------------------------------------------------


class _PausedGc(Maintenance):
    """gc that stops after deciding what to delete and before deleting, until told to go on."""

    def __init__(self, vault: Vault) -> None:
        super().__init__(objects=vault.objects, meta=vault.meta, vault_dir=vault.dir)
        self.decided = threading.Event()
        self.proceed = threading.Event()
        real_iter = vault.objects.iter_objects

        def iter_then_pause():  # type: ignore[no-untyped-def]
            infos = list(real_iter())
            self.decided.set()
            assert self.proceed.wait(30)
            yield from infos

        self._objects = _Proxy(vault.objects, iter_objects=iter_then_pause)


class _Proxy:
    def __init__(self, target: object, **overrides: object) -> None:
        self._target = target
        self._overrides = overrides

    def __getattr__(self, name: str) -> object:
        return self._overrides.get(name) or getattr(self._target, name)


def test_a_re_put_during_gc_waits_for_it_and_is_never_lost(any_vault: Vault) -> None:
    """gc holds the gc lock exclusively; a writer's batch holds it shared. Deterministic order:
    gc decides to delete an old orphan, then a writer re-puts that object, then gc deletes.
    The writer must wait for gc, find the object gone, and store it again."""
    store = any_vault.objects
    digest = store.put_bytes(b"re-put me")
    age(any_vault, digest)
    gc = _PausedGc(any_vault)
    results: dict[str, object] = {}
    gc_thread = threading.Thread(target=lambda: results.setdefault("gc", gc.gc(grace=60)))
    gc_thread.start()
    assert gc.decided.wait(30)
    writer = threading.Thread(target=lambda: results.setdefault("put", store.put_bytes(b"re-put me")))
    writer.start()
    writer.join(timeout=0.5)
    assert writer.is_alive(), "the writer did not wait for gc's exclusive lock"
    gc.proceed.set()
    gc_thread.join(timeout=30)
    writer.join(timeout=30)
    assert results["gc"].deleted == (digest,)  # type: ignore[attr-defined]
    assert results["put"] == digest
    assert store.has(digest)
    assert store.get_bytes(digest) == b"re-put me"


def test_gc_waits_for_an_open_batch_and_then_keeps_what_it_refreshed(any_vault: Vault) -> None:
    """The other order: the writer refreshes an old object inside a batch; gc cannot start until
    the batch ends, and then sees the object as young."""
    store = any_vault.objects
    digest = store.put_bytes(b"refreshed")
    age(any_vault, digest)
    with store.batch():
        assert store.put_bytes(b"refreshed") == digest  # a no-op that refreshes its age
        with pytest.raises(LockedError):
            any_vault.maintenance.gc(grace=60, lock_timeout=0.2)
        done: list[object] = []
        gc_thread = threading.Thread(target=lambda: done.append(any_vault.maintenance.gc(grace=60)))
        gc_thread.start()
        time.sleep(0.3)
        assert not done, "gc ran while a writer's batch was open"
    gc_thread.join(timeout=30)
    assert done[0].deleted == ()  # type: ignore[attr-defined]
    assert store.has(digest)


def test_gc_between_put_and_metadata_keeps_young_objects(vault: Vault, tmp_path: Path) -> None:
    """Objects first, metadata second: a gc in between must not take the just-written objects."""
    store = vault.objects
    with store.batch():
        d = store.put_bytes(b"about to be referenced")
    report = vault.maintenance.gc(grace=parse_duration("14d"))
    assert report.deleted == ()
    refer(vault, "data:late@v1", (d, "blob"))
    assert vault.maintenance.fsck().clean
