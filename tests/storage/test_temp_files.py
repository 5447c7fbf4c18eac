"""Temp files of killed writers: the next writer and gc remove them, fsck counts them, and a live
writer's are never touched. The writers are real processes, killed with SIGKILL mid-write."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from labvault.vault import Vault

CHUNK = 4 * 1024 * 1024

# Streams one chunk into a temp file, says so, then waits for a line on stdin before it finishes.
WRITER = r"""
import sys
from pathlib import Path
from labvault.storage.objects.local import LocalObjectStore

class Paused:
    sent = False
    def read(self, n):
        if not self.sent:
            self.sent = True
            return b"x" * int(sys.argv[2])
        print("writing", flush=True)
        sys.stdin.readline()
        return b""

store = LocalObjectStore(Path(sys.argv[1]))
print(store.put_stream(Paused()), flush=True)
"""


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    vault, _ = Vault.init(tmp_path)
    yield vault
    vault.close()


def _writer(vault_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(vault_dir), str(CHUNK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read() if proc.stderr else ""
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _temp_files(vault_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(vault_dir / "tmp") if n.startswith("obj-"))


def test_the_next_writer_removes_the_temp_files_of_a_killed_one(vault: Vault) -> None:
    proc = _writer(vault.dir)
    _kill(proc)
    [left] = _temp_files(vault.dir)
    assert left.startswith(f"obj-{proc.pid}-")
    assert os.path.getsize(vault.dir / "tmp" / left) == CHUNK

    LocalObjectStore(vault.dir).put_bytes(b"the next writer")  # a new process's first write
    assert _temp_files(vault.dir) == []
    assert not [n for n in os.listdir(vault.dir / "tmp") if n.startswith("writer-")]  # its lock went too


def test_fsck_counts_the_temp_files_of_killed_writers_and_gc_removes_them(vault: Vault) -> None:
    procs = [_writer(vault.dir) for _ in range(3)]  # all alive at once: none sweeps another
    for proc in procs:
        _kill(proc)
    assert len(_temp_files(vault.dir)) == 3

    report = vault.maintenance.fsck()
    assert (report.stale_temp_files, report.stale_temp_bytes) == (3, 3 * CHUNK)
    assert report.clean  # leftovers of a crash are not a problem
    assert len(_temp_files(vault.dir)) == 3  # fsck only counts

    gc = vault.maintenance.gc(grace=14 * 86400)  # at any age: no live writer holds them
    assert gc.temp_files_removed == 3
    assert _temp_files(vault.dir) == []
    assert vault.maintenance.fsck().stale_temp_files == 0


def test_a_live_writers_temp_file_is_never_removed(vault: Vault) -> None:
    proc = _writer(vault.dir)
    try:
        LocalObjectStore(vault.dir).put_bytes(b"another writer")  # sweeps, and leaves it alone
        assert vault.maintenance.fsck().stale_temp_files == 0  # (gc waits for the writer's batch)
        assert len(_temp_files(vault.dir)) == 1
        out, err = proc.communicate("go\n", timeout=60)  # let it finish: its put succeeds
    finally:
        if proc.poll() is None:
            _kill(proc)
    assert proc.returncode == 0, err
    digest = Digest(hashlib.sha256(b"x" * CHUNK).hexdigest())
    assert out.strip() == str(digest)
    assert vault.objects.get_bytes(digest) == b"x" * CHUNK
    assert _temp_files(vault.dir) == []


def test_gc_removes_an_old_staging_folder_of_a_killed_import(vault: Vault) -> None:
    staging = vault.dir / "tmp" / "import-4242-0123456789ab"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "part.csv").write_text("a,b\n")
    old = 1_000_000.0
    os.utime(staging, (old, old))
    report = vault.maintenance.gc(grace=3600)
    assert report.temp_files_removed == 1
    assert not staging.exists()
