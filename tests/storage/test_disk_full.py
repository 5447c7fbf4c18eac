"""A full disk is said as "disk full" (what happened, where, what to free), exit 7, never "disk I/O
error": ENOSPC injected where the stores translate OSError and SQLite errors, and SQLite's two ways of
saying it ("database or disk is full", and "disk I/O error" when it cannot grow its WAL) on a real,
full tmpfs."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import exc

from labvault.errors import LabvaultError, StorageError
from labvault.storage.meta import store as meta_store
from labvault.storage.meta.repos import metric_appender
from labvault.storage.objects.indexdb import translate_sqlite_errors
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.packindex import PackIndex


def small_disk_at(mnt: Path) -> None:
    """Mount a 2 MiB tmpfs at ``mnt`` (root only); skipped where it cannot, failed under CI=true."""
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        reason = f"cannot mount a small tmpfs to fill: {proc.stderr.strip() or proc.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true requires it)")
        pytest.skip(reason)


def fill(folder: Path) -> Path:
    """Take every free byte of the filesystem holding ``folder``; the filler file is returned."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 65536)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "full"
    small_disk_at(mnt)
    try:
        fill(mnt)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _is_disk_full(err: LabvaultError, where: Path | str) -> None:
    assert isinstance(err, StorageError)
    assert err.exit_code == 7
    assert err.message.startswith("disk full while "), err.message
    assert str(where) in err.message
    assert "free space there" in err.hint


# -- injected at the edge ---------------------------------------------------------------------


def test_enospc_while_committing_a_pack_is_disk_full_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore.create(tmp_path / ".labvault")
    store.put_bytes(b"before")
    [pack] = store.packs.dir.glob("*.pack")
    size = pack.stat().st_size

    def no_room(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", no_room)
    with pytest.raises(StorageError) as err:
        store.put_bytes(b"no room for me")
    _is_disk_full(err.value, store.vault_dir)
    monkeypatch.undo()
    assert pack.stat().st_size == size  # the batch was cut back
    assert [i.size for i in store.iter_objects()] == [len(b"before")]


def test_edquot_says_the_quota_is_exceeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalObjectStore.create(tmp_path / ".labvault")

    def over_quota(_fd: int, _data: object) -> int:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "write", over_quota)
    with pytest.raises(StorageError, match="disk quota exceeded while writing an object") as err:
        store.put_bytes(os.urandom(2 * 1024 * 1024))
    assert err.value.exit_code == 7


@pytest.mark.parametrize("text", ["database or disk is full", "disk I/O error"])
def test_sqlite_errors_on_a_full_disk_are_disk_full(full_disk: Path, text: str) -> None:
    index = PackIndex(full_disk)

    @translate_sqlite_errors
    def update(_index: PackIndex) -> None:
        raise sqlite3.OperationalError(text)

    with pytest.raises(StorageError) as err:
        update(index)
    _is_disk_full(err.value, full_disk)

    db = full_disk / "meta.db"
    wrapped = exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError(text))
    _is_disk_full(meta_store._translate(wrapped, db), db)
    _is_disk_full(metric_appender._translate(sqlite3.OperationalError(text), db), db)


def test_an_io_error_with_room_to_spare_is_not_called_a_full_disk(tmp_path: Path) -> None:
    @translate_sqlite_errors
    def update(_index: PackIndex) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StorageError, match="the pack index failed: disk I/O error"):
        update(PackIndex(tmp_path))
    wrapped = exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("disk I/O error"))
    assert "disk full" not in meta_store._translate(wrapped, tmp_path / "meta.db").message


def test_a_torn_tail_is_not_cut_when_its_bytes_cannot_be_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore.create(tmp_path / ".labvault")
    kept = store.put_bytes(b"indexed")
    store.packs.close()
    [pack] = store.packs.dir.glob("*.pack")
    with open(pack, "ab") as f:  # a batch killed mid-write
        f.write(b"LVOB" + b"\x01" * 32 + (100).to_bytes(8, "little") + b"torn")
    size = pack.stat().st_size

    def no_room(_fd: int, _data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_room)
    with pytest.raises(StorageError) as err:
        LocalObjectStore(store.vault_dir).has(kept)  # opening the index recovers the pack
    _is_disk_full(err.value, store.packs.dir)
    assert pack.stat().st_size == size  # not cut: its bytes could not be put aside first
    monkeypatch.undo()
    again = LocalObjectStore(store.vault_dir)
    assert again.get_bytes(kept) == b"indexed"
    assert pack.stat().st_size < size
    assert [p.read_bytes()[-4:] for p in again.quarantine_dir.iterdir()] == [b"torn"]
