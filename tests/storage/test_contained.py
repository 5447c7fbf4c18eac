"""The contained-write helper: nothing leaves the destination, nothing goes through a stored link."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labvault.errors import Conflict, IntegrityError, ValidationError
from labvault.storage.contained import Dest
from labvault.storage.objects.tree import decode_tree


def _tree(*names: str) -> bytes:
    entries = [{"name": n, "sha256": "a" * 64, "size": 1, "type": "file"} for n in names]
    return json.dumps({"entries": entries, "format": "labvault.tree/1"}).encode()


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\0b"])
def test_decode_tree_refuses_names_that_are_not_one_component(name: str) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        decode_tree(_tree("ok", name))


def test_decode_tree_refuses_duplicate_names_and_bad_digests() -> None:
    with pytest.raises(IntegrityError, match="two entries"):
        decode_tree(_tree("a", "a"))
    bad = json.dumps(
        {"entries": [{"name": "a", "sha256": "zz", "size": 1, "type": "file"}], "format": "labvault.tree/1"}
    )
    with pytest.raises(IntegrityError):  # not a ValidationError (exit 2): the stored tree is corrupt
        decode_tree(bad.encode())


def test_writes_land_below_the_destination(tmp_path: Path) -> None:
    with Dest.open(tmp_path / "dst") as dest:
        dest.write_bytes("a/b/c.txt", b"hi")
        dest.symlink("a/link", "b/c.txt")
    assert (tmp_path / "dst" / "a" / "b" / "c.txt").read_bytes() == b"hi"
    assert os.readlink(tmp_path / "dst" / "a" / "link") == "b/c.txt"
    assert sorted(p.name for p in (tmp_path / "dst" / "a" / "b").iterdir()) == ["c.txt"]  # no temp left


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/abs", "a//b", "", "a/./b", "a\0b"])
def test_paths_that_climb_out_are_refused(tmp_path: Path, rel: str) -> None:
    with Dest.open(tmp_path / "dst") as dest, pytest.raises(ValidationError):
        dest.write_bytes(rel, b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["dst"]


def test_a_link_where_a_folder_must_be_is_a_conflict(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "lnk").symlink_to(elsewhere)
    with Dest.open(tmp_path / "dst") as dest:
        with pytest.raises(Conflict, match=r"dst/lnk is a link"):
            dest.write_bytes("lnk/payload.txt", b"x")
        with pytest.raises(Conflict, match=r"dst/lnk is a link"):
            dest.check_dirs("lnk/sub")
        with pytest.raises(Conflict, match=r"dst/lnk is a link"):
            dest.remove("lnk/victim")
        (tmp_path / "dst" / "file").write_text("f")
        with pytest.raises(Conflict, match=r"dst/file is a file"):
            dest.mkdir("file/sub")
    assert list(elsewhere.iterdir()) == []


def test_remove_takes_the_link_not_what_it_points_at(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "lnk").symlink_to(elsewhere)
    with Dest.open(tmp_path / "dst") as dest:
        dest.remove("lnk")
        dest.write_bytes("x.txt", b"x")
    assert (elsewhere / "keep.txt").read_text() == "keep"
    assert not os.path.lexists(tmp_path / "dst" / "lnk")


def test_a_file_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "f.txt").symlink_to(victim)
    with Dest.open(tmp_path / "dst") as dest:
        dest.write_bytes("f.txt", b"new")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "dst" / "f.txt").is_symlink()


def test_a_link_the_user_typed_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "srv"
    real.mkdir()
    (tmp_path / "deploy").symlink_to(real)
    with Dest.open(tmp_path / "deploy") as dest:
        dest.write_bytes("m/1.0/w.bin", b"w")
    assert (real / "m" / "1.0" / "w.bin").read_bytes() == b"w"


def test_a_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    def fill(fd: int) -> None:
        os.write(fd, b"half")
        raise IntegrityError("bytes do not match")

    with Dest.open(tmp_path / "dst") as dest:
        dest.write_bytes("old.txt", b"old")
        with pytest.raises(IntegrityError):
            dest.write("old.txt", fill)
        with pytest.raises(IntegrityError):
            dest.write("new.txt", fill)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["old.txt"]
    assert (tmp_path / "dst" / "old.txt").read_bytes() == b"old"


def test_a_folder_in_the_way_of_a_file_is_a_conflict(tmp_path: Path) -> None:
    with Dest.open(tmp_path / "dst") as dest:
        dest.mkdir("a/b")
        with pytest.raises(Conflict, match="is a folder"):
            dest.write_bytes("a/b", b"x")
        with pytest.raises(Conflict, match="is a file"):
            dest.write_bytes("a/c", b"x") or dest.write_bytes("a/c", b"y", overwrite=False)
