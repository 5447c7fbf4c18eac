"""A completely full disk through the executable: every command says "disk full" (what happened, where,
what to free) and exits 7, never "disk I/O error"; once space is freed, the vault is sound."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli
from tests.storage.test_disk_full import fill, small_disk_at

COMMANDS = [
    ("data", "add", "more", "more.txt"),
    ("object", "put", "more.txt"),
    ("object", "put", "big.bin"),
    ("fsck",),
    ("gc",),
    ("data", "checkout", "first", "out"),
    ("run", "--", "true"),
]


@pytest.fixture
def small_project(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    small_disk_at(mnt)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_cli_every_command_on_a_full_disk_says_disk_full(cli: Cli, small_project: Path, tmp_path: Path) -> None:
    cli("init", cwd=small_project)
    (small_project / "first.txt").write_text("stored while there was room\n")
    cli("data", "add", "first", "first.txt", cwd=small_project)
    (small_project / "more.txt").write_text("no room for this\n")
    (small_project / "big.bin").write_bytes(os.urandom(1))  # replaced below, once the disk is full
    filler = fill(small_project)
    (tmp_path / "big.bin").write_bytes(os.urandom(1024 * 1024 + 1))
    (small_project / "big.bin").unlink()
    (small_project / "big.bin").symlink_to(tmp_path / "big.bin")  # a large file from another disk

    for args in COMMANDS:
        proc = cli(*args, cwd=small_project, expect=7)
        lines = proc.stderr.splitlines()
        assert lines[0].startswith("error: disk full while "), (args, proc.stderr)
        assert str(small_project) in lines[0]
        assert lines[1].startswith("hint: free space there"), (args, proc.stderr)
        assert "I/O error" not in proc.stderr

    filler.unlink()
    cli("data", "add", "more", "more.txt", cwd=small_project)
    doc = json.loads(cli("fsck", "--json", cwd=small_project).stdout)
    assert doc["clean"] is True
    assert doc["stale_temp_files"]["count"] == 0
