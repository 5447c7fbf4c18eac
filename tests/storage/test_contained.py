"""The contained-write helper: nothing leaves the destination, nothing goes through a stored link."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import labvault
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
        dest.write_file("a/b/c.txt", b"hi")
        dest.symlink("a/link", "b/c.txt")
    assert (tmp_path / "dst" / "a" / "b" / "c.txt").read_bytes() == b"hi"
    assert os.readlink(tmp_path / "dst" / "a" / "link") == "b/c.txt"
    assert sorted(p.name for p in (tmp_path / "dst" / "a" / "b").iterdir()) == ["c.txt"]  # no temp left


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/abs", "a//b", "", "a/./b", "a\0b"])
def test_paths_that_climb_out_are_refused(tmp_path: Path, rel: str) -> None:
    with Dest.open(tmp_path / "dst") as dest, pytest.raises(ValidationError):
        dest.write_file(rel, b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["dst"]


def test_a_link_where_a_folder_must_be_is_a_conflict(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "lnk").symlink_to(elsewhere)
    with Dest.open(tmp_path / "dst") as dest:
        with pytest.raises(Conflict, match=r"dst/lnk is a link"):
            dest.write_file("lnk/payload.txt", b"x")
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
        dest.write_file("x.txt", b"x")
    assert (elsewhere / "keep.txt").read_text() == "keep"
    assert not os.path.lexists(tmp_path / "dst" / "lnk")


def test_a_file_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "f.txt").symlink_to(victim)
    with Dest.open(tmp_path / "dst") as dest:
        dest.write_file("f.txt", b"new")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "dst" / "f.txt").is_symlink()


def test_a_link_the_user_typed_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "srv"
    real.mkdir()
    (tmp_path / "deploy").symlink_to(real)
    with Dest.open(tmp_path / "deploy") as dest:
        dest.write_file("m/1.0/w.bin", b"w")
    assert (real / "m" / "1.0" / "w.bin").read_bytes() == b"w"


def test_a_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    def fill(fd: int) -> None:
        os.write(fd, b"half")
        raise IntegrityError("bytes do not match")

    with Dest.open(tmp_path / "dst") as dest:
        dest.write_file("old.txt", b"old")
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
            dest.write_file("a/b", b"x")
        with pytest.raises(Conflict, match="is a file"):
            dest.write_file("a/c", b"x") or dest.write_file("a/c", b"y", overwrite=False)


# -- one writer ---------------------------------------------------------------------------------
# What counts as writing a file: opening one for writing, renaming, linking, copying, deleting.
_WRITES = re.compile(
    r"""\bopen\([^)]*["'][rwxab]*[wxa+][rwxab+]*["']"""  # open(path, "w"), open(tmp, "xb"), ...
    r"|os\.open\([^)]*O_(?:WRONLY|RDWR|CREAT)"
    r"|\bos\.(?:replace|rename|link|symlink|unlink|remove|rmdir|truncate)\("
    r"|\.(?:write_bytes|write_text|symlink_to|hardlink_to|unlink)\("
    r"|\bshutil\.(?:copy\w*|move|rmtree)\("
    r"|\.get_file\("
)

#: Modules that may write files themselves, and why. Everything else goes through
#: ``labvault.storage.contained``.
ALLOWED = {
    "storage/contained.py": "the contained-write helper itself",
    "storage/objects/local.py": "the object store deletes a larger object's own file (gc)",
    "storage/objects/local_writes.py": "the object store's puts remove their temp file when it is not needed",
    "storage/objects/loose.py": "the object store's temp-and-rename internals (loose objects)",
    "storage/objects/packs.py": "the object store's internals (pack files)",
    "storage/objects/packfile.py": "the object store's internals (pack files)",
    "storage/objects/tempfiles.py": "the object store's writer locks and temp files, and sweeping dead writers' ones",
    "storage/objects/uploads.py": "the object store's upload sessions: its own files in tmp/, named by a checked id",
    "storage/objects/quarantine.py": "removes quarantined objects older than the grace (gc --quarantine)",
    "storage/objects/packindex.py": "moves a damaged pack index into quarantine/ before rebuilding it from the packs",
    "storage/locks.py": "creates lock files (empty, never renamed or read back as data)",
    "services/maintenance.py": "gc deletes the object store's stale temp files",
    "services/audit.py": "the audit head: one fixed-size record rewritten in place under a lock",
    "services/capture/git.py": "copies git's index into its own mkdtemp folder for git to read",
    "client/settings.py": "the saved login: one 0600 file of its own in the user's config folder, never a path given",
    "client/spool.py": "tracking spools: files of its own in the user's cache folder (O_NOFOLLOW)",
    "client/spool_reader.py": "a spool's state file and the spool's removal once sent: files of its own (O_NOFOLLOW)",
    "client/sender.py": "removes a spool's state file once the spool was sent",
    "server/ui/session.py": "the web UI's session key: one 0600 file of its own in the vault folder, made once",
}


def _write_sites() -> dict[str, list[str]]:
    src = Path(labvault.__file__).parent
    found: dict[str, list[str]] = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _WRITES.search(code):
                found.setdefault(rel, []).append(f"{rel}:{n}: {line.strip()}")
    return found


def test_every_file_write_goes_through_the_contained_helper() -> None:
    found = _write_sites()
    stray = [site for rel, sites in found.items() if rel not in ALLOWED for site in sites]
    assert stray == [], "write files through labvault.storage.contained:\n" + "\n".join(stray)


def test_the_scan_sees_writes_and_the_allow_list_is_current() -> None:
    assert _WRITES.search('with open(tmp, "wb") as f:')
    assert _WRITES.search("os.replace(tmp, path)")
    assert _WRITES.search("fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)")
    assert _WRITES.search("shutil.rmtree(final)")
    assert _WRITES.search("Path(output).write_text(text)")
    assert not _WRITES.search('with open(path, "rb") as f:')
    assert not _WRITES.search("fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)")
    found = _write_sites()
    assert [rel for rel in ALLOWED if rel not in found] == []  # an entry nothing needs goes


@pytest.mark.parametrize(
    "doc",
    [
        b"[]",
        b'{"format":"labvault.tree/1","entries":"abc"}',
        b'{"format":"labvault.tree/1","entries":[1]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"file","sha256":1,"size":1}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"file","sha256":"' + b"a" * 64 + b'","size":-1}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"file","sha256":"' + b"a" * 64 + b'","size":1.5}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"file","sha256":"'
        + b"a" * 64
        + b'","size":true}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"link","target":""}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"link","target":"x\\u0000y"}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":["a"],"type":"link","target":"x"}]}',
        b'{"format":"labvault.tree/1","entries":[{"name":"a","type":"socket"}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
    ],
)
def test_decode_tree_says_corrupt_for_any_malformed_tree(doc: bytes) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        decode_tree(doc)


def test_held_folders_are_forgotten_when_a_folder_goes(tmp_path: Path) -> None:
    with Dest.open(tmp_path / "dst") as dest:
        dest.write_file("a/b/x", b"x")
        dest.remove("a")
        dest.write_file("a/b/y", b"y")  # not into the removed folder's descriptor
        dest.write_file("c/d/z", b"z")
        dest.rename("c/d", "e")
        dest.write_file("c/d/w", b"w")
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*") if p.is_file()) == [
        "a/b/y",
        "c/d/w",
        "e/z",
    ]


def test_create_file_never_replaces_nor_writes_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    with Dest.open(tmp_path / "dst") as dest:
        tmp = dest.temp_dir("out")
        assert tmp.startswith(".out.labvault-")
        dest.create_file(f"{tmp}/a/b.txt", b"new")
        (tmp_path / "dst" / tmp / "lnk").symlink_to(victim)
        with pytest.raises(Conflict, match="in the way"):
            dest.create_file(f"{tmp}/lnk", b"x")
        with pytest.raises(Conflict, match="in the way"):
            dest.create_file(f"{tmp}/a/b.txt", b"x")
        dest.rename(tmp, "out")
    assert victim.read_text() == "precious"
    assert (tmp_path / "dst" / "out" / "a" / "b.txt").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["out"]
