"""``removable_lock``: the lock file goes when the block ends, and a process that waited on the
removed file never holds the key alongside a newcomer; ``sweep_locks`` removes unheld files only."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from labvault.errors import LockedError
from labvault.storage.locks import removable_lock, sweep_locks


def test_the_file_is_removed_when_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    with removable_lock(path, timeout=1):
        assert path.exists()
    assert not path.exists()
    with removable_lock(path, timeout=1):  # and the key can be taken again
        pass
    assert not path.exists()


def test_holders_never_overlap_while_files_come_and_go(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    inside: list[int] = []
    overlaps: list[int] = []
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(30):
            with removable_lock(path, timeout=30):
                with guard:
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(len(inside))
                time.sleep(0.0005)
                with guard:
                    inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert not path.exists()


def test_a_held_key_times_out(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockedError), removable_lock(path, timeout=0.05, what="stage x's key"):
            pass
    finally:
        os.close(fd)
    assert path.exists()  # not ours to remove


def test_sweep_removes_only_unheld_files(tmp_path: Path) -> None:
    (tmp_path / "dead.lock").write_bytes(b"")  # left by a killed run
    (tmp_path / "other.txt").write_bytes(b"")
    held = tmp_path / "held.lock"
    fd = os.open(held, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert sweep_locks(tmp_path) == 1
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held.lock", "other.txt"]
    assert sweep_locks(tmp_path / "missing") == 0
