"""File names a snapshot cannot record: refused at the scan, named in escaped form."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labvault.errors import ValidationError
from labvault.services.snapshots.scan import scan_path


def _write(path: bytes, data: bytes = b"x") -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_a_non_utf8_file_name_is_refused_and_named(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    _write(os.fsencode(root / "ok.txt"))
    _write(os.fsencode(root / "sub") + b"/bad\xff.txt")
    with pytest.raises(ValidationError) as err:
        scan_path(root)
    assert "sub/bad\\xff.txt" in err.value.message
    assert "UTF-8" in err.value.message
    assert err.value.exit_code == 2


def test_a_non_utf8_folder_and_link_target_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    os.mkdir(os.fsencode(root) + b"/dir\xfe")
    with pytest.raises(ValidationError, match=r"dir\\xfe"):
        scan_path(root)
    os.rmdir(os.fsencode(root) + b"/dir\xfe")
    os.symlink(b"target\xff", os.fsencode(root) + b"/link")
    with pytest.raises(ValidationError, match=r"target\\xff"):
        scan_path(root)


def test_a_non_utf8_single_file_is_refused(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/solo\xfe.csv"
    _write(path)
    with pytest.raises(ValidationError, match=r"solo\\xfe.csv"):
        scan_path(Path(os.fsdecode(path)))


def test_utf8_names_beyond_ascii_are_fine(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "données é 数据.csv").write_text("x")
    assert list(scan_path(root).files) == ["données é 数据.csv"]


def test_a_non_utf8_dataset_folder_is_refused(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path) + b"/data\xfe"
    os.mkdir(root)
    _write(root + b"/a.csv")
    with pytest.raises(ValidationError, match=r"data\\xfe"):
        scan_path(Path(os.fsdecode(root)))


def test_an_ignore_file_that_is_not_utf8_text_or_not_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    _write(os.fsencode(root / "a.csv"))
    (root / ".labvaultignore").write_bytes(b"\xff\xfe*.tmp\n")  # was a UnicodeDecodeError
    with pytest.raises(ValidationError, match=r"\.labvaultignore: not UTF-8 text"):
        scan_path(root)
    for bad in ("!\n", "**/[z-a]\n"):  # patterns pathspec refuses: were tracebacks too
        (root / ".labvaultignore").write_text(bad)
        with pytest.raises(ValidationError, match=r"\.labvaultignore: "):
            scan_path(root)
    (root / ".labvaultignore").unlink()
    os.mkfifo(root / ".labvaultignore")  # would block the scan forever
    with pytest.raises(ValidationError, match="not a regular file"):
        scan_path(root)
