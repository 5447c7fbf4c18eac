"""A snapshot never records a size or a hash that is not the file's: changes between the scan and the
read, and during the read, below and above the 1 MiB pack threshold; ``status``'s "changing" answer;
``fsck`` comparing every manifest size with its object."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labvault.errors import Conflict
from labvault.refs import Digest
from labvault.services.snapshots import service as snapshot_service
from labvault.services.snapshots import statcache
from labvault.services.snapshots.scan import Scan, scan_path
from labvault.services.snapshots.statcache import FileChanged
from labvault.storage.meta.repos.object_refs import add_refs
from labvault.storage.objects.tree import TreeEntry, put_tree
from labvault.vault import Vault

MIB = 1024 * 1024
SIZES = pytest.mark.parametrize("size", [4096, 3 * MIB], ids=["below-1MiB", "above-1MiB"])


def _grow_after_scan(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Append to ``target`` right after ``data add`` scanned the folder, before it reads the file."""
    real = scan_path

    def scan_then_grow(root: Path, *, skip: tuple[int, int] | None = None) -> Scan:
        scan = real(root, skip=skip)
        with open(target, "ab") as out:
            out.write(b"grown after the scan")
        return scan

    monkeypatch.setattr(snapshot_service, "scan_path", scan_then_grow)


@SIZES
def test_a_file_that_grows_after_the_scan_is_refused_not_misrecorded(
    vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    data = project / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(b"b" * size)
    (data / "small.txt").write_text("s\n")
    _grow_after_scan(monkeypatch, data / "big.bin")
    with pytest.raises(FileChanged) as caught:
        vault.data.add("raw", data)
    assert caught.value.exit_code == 4
    assert "big.bin" in str(caught.value)
    assert vault.data.datasets() == []
    monkeypatch.undo()
    snapshot, _ = vault.data.add("raw", data)  # settled: recorded with the size its bytes have
    (entry,) = [f for f in vault.data.get(snapshot.ref).files if f.path == "big.bin"]
    assert entry.size == size + len(b"grown after the scan") == vault.objects.info(entry.sha256).size
    assert vault.data.status()[0].clean
    assert vault.maintenance.fsck().clean


@SIZES
def test_a_file_that_changes_while_it_is_read_during_add_is_refused(
    vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Above 1 MiB the bytes are hashed while they are copied into the store: the stat before and
    after that copy must agree (the check this test guards); below, one read and its fstat."""
    target = project / "data.bin"
    target.write_bytes(b"d" * size)
    if size > MIB:
        real_put = vault.objects.put_file

        def put_then_append(path: Path) -> Digest:
            digest = real_put(path)
            with open(path, "ab") as out:
                out.write(b"written during the copy")
            return digest

        monkeypatch.setattr(vault.data.objects, "put_file", put_then_append)
    else:
        _append_on_second_fstat(monkeypatch, target, b"written during the read")
    with pytest.raises(FileChanged):
        vault.data.add("raw", target)
    assert vault.data.datasets() == []


def _append_on_second_fstat(monkeypatch: pytest.MonkeyPatch, target: Path, extra: bytes) -> None:
    """Make ``target`` change between the two fstat calls of one read (a writer racing the read)."""
    real = os.fstat
    seen: list[int] = []
    ino = target.stat().st_ino

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        if st.st_ino == ino:
            seen.append(fd)
            if len(seen) == 2:
                with open(target, "ab") as out:
                    out.write(extra)
                return real(fd)
        return st

    monkeypatch.setattr(statcache.os, "fstat", fstat)


@SIZES
def test_status_reports_a_file_changing_while_it_is_hashed(
    vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    data = project / "data"
    data.mkdir()
    target = data / "f.bin"
    target.write_bytes(b"a" * size)
    (data / "other.txt").write_text("o\n")
    vault.data.add("raw", data)
    target.write_bytes(b"b" * size)  # the same size: status must read it to know
    _append_on_second_fstat(monkeypatch, target, b"more")
    (s,) = vault.data.status()
    assert s.changing == ("f.bin",)
    assert s.modified == ()
    assert not s.clean


def test_fsck_compares_every_manifest_size_with_its_object(vault: Vault) -> None:
    blob = vault.objects.put_bytes(b"twelve bytes")
    big = vault.objects.put_bytes(b"x" * (2 * MIB))
    sub = put_tree(vault.objects, [TreeEntry("big.bin", "file", big, 2 * MIB + 1)])
    root = put_tree(
        vault.objects,
        [TreeEntry("a.txt", "file", blob, 11), TreeEntry("ok.txt", "file", blob, 12), TreeEntry("sub", "dir", sub, 0)],
    )
    with vault.meta.transaction() as conn:
        add_refs(conn, "data:raw@v1", [(root, "tree")])
    report = vault.maintenance.fsck()
    assert not report.clean
    sizes = [p for p in report.problems if "is listed with" in p]
    assert len(sizes) == 2, report.problems
    assert any("a.txt is listed with 11 bytes" in p and "holds 12" in p for p in sizes)
    assert any("sub/big.bin" in p for p in sizes)


def test_a_run_artifact_changing_while_it_is_stored_is_refused(
    vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run artifacts are tree manifests too: a file that grows between the folder listing and its
    copy is refused (exit 4), never listed with a size that is not its object's."""
    out = project / "out"
    out.mkdir()
    (out / "model.bin").write_bytes(b"m" * 1000)
    real_put = vault.objects.put_file

    def put_then_grow(path: Path) -> Digest:
        digest = real_put(path)
        with open(path, "ab") as f:
            f.write(b"late bytes")
        return digest

    run = vault.runs.create(name="x", capture=False, background_git=False)
    monkeypatch.setattr(vault.runs.objects, "put_file", put_then_grow)
    for path in (out, out / "model.bin"):
        with pytest.raises(Conflict, match="changed while it was being stored") as caught:
            vault.runs.log_artifact(run.id, path)
        assert caught.value.exit_code == 4
    monkeypatch.undo()
    artifact = vault.runs.log_artifact(run.id, out)
    assert artifact.size == 1020
    vault.runs.finish(run.id)
    assert vault.maintenance.fsck().clean
