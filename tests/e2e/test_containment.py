"""Containment through the installed ``labvault`` executable: no write leaves its destination.

Stored data (tree entries, lock-file keys, model names) is untrusted: a crafted tree or lock file
must not make labvault write outside the folder it was asked to write to, nor through a link.
"""

from __future__ import annotations

import json
import os
import sqlite3
import unicodedata
from pathlib import Path

import pytest

from labvault import Vault
from labvault.errors import Conflict
from labvault.storage.objects.local import LocalObjectStore
from tests.e2e.conftest import Cli


def _raw_tree(store: LocalObjectStore, entries: list[dict[str, object]]) -> str:
    """A tree object written byte for byte, past every check ``encode_tree`` makes."""
    doc = {"entries": entries, "format": "labvault.tree/1"}
    return store.put_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hex


def _hostile_tree(store: LocalObjectStore, outside: Path) -> str:
    with store.batch():
        blob = store.put_bytes(b"evil\n").hex
        sub = _raw_tree(store, [{"name": "escape4", "sha256": blob, "size": 5, "type": "file"}])
        return _raw_tree(
            store,
            [
                {"name": "../escape1", "sha256": blob, "size": 5, "type": "file"},
                {"name": "a/../../escape2", "sha256": blob, "size": 5, "type": "file"},
                {"name": str(outside / "escape3"), "sha256": blob, "size": 5, "type": "file"},
                {"name": "..", "sha256": sub, "size": 5, "type": "dir"},
            ],
        )


def point_at_hostile_tree(vault_dir: Path, outside: Path) -> str:
    """Point ``data:ds@v1`` and ``p/m@0.1.0`` of the SQLite vault ``vault_dir`` at a hostile tree that
    escapes to ``outside``; the crafted tree's hex digest."""
    store = LocalObjectStore(vault_dir)
    crafted = _hostile_tree(store, outside)
    with store.batch():
        v = _raw_tree(store, [{"name": "0.1.0", "sha256": crafted, "size": 20, "type": "dir"}])
        m = _raw_tree(store, [{"name": "m", "sha256": v, "size": 20, "type": "dir"}])
        wrap = _raw_tree(store, [{"name": "p", "sha256": m, "size": 20, "type": "dir"}])
    with sqlite3.connect(vault_dir / "meta.db") as conn:
        conn.execute("UPDATE data_snapshots SET content_hash = ?", (crafted,))
        conn.execute("UPDATE registry_versions SET tree = ?, content = ?", (wrap, crafted))
        conn.execute("UPDATE object_refs SET digest = ? WHERE owner = 'data:ds@v1'", (crafted,))
        conn.execute("UPDATE object_refs SET digest = ? WHERE owner = 'p/m@0.1.0'", (wrap,))
    return crafted


def _files(top: Path, *, skip: Path) -> set[Path]:
    """Every file and link below ``top``, except inside ``skip`` (the vault's own bookkeeping)."""
    out = set()
    for folder, dirs, files in os.walk(top):
        base = Path(folder)
        dirs[:] = [d for d in dirs if base / d != skip]
        out.update(base / n for n in files)
        out.update(base / d for d in dirs if (base / d).is_symlink())
    return out


@pytest.fixture
def hostile(cli: Cli, project: Path, tmp_path: Path) -> Path:
    """A vault where ``data:ds@v1`` and ``p/m@0.1.0`` both point at the escaping tree; returns the outside folder."""
    cli("init", "-q")
    (project / "ds").mkdir()
    (project / "ds" / "ok.txt").write_text("ok\n")
    cli("data", "add", "ds", "ds", "-q")
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_text("w\n")
    cli("models", "register", "p/m", "model", "-q")
    outside = tmp_path / "outside"
    outside.mkdir()
    vault_dir = project / ".labvault"
    root = point_at_hostile_tree(vault_dir, outside)
    lock = json.loads((project / "labvault.lock").read_text())
    lock["datasets"]["ds"]["content_hash"] = f"sha256:{root}"
    (project / "labvault.lock").write_text(json.dumps(lock))
    for cache in (vault_dir / "cache" / "trees").glob("*"):
        cache.unlink()
    return outside


def test_fsck_reports_a_tree_whose_names_escape(hostile: Path, cli: Cli) -> None:
    out = cli("fsck", expect=1)
    assert "cannot be read" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("args", "dest"),
    [
        (("data", "checkout", "data:ds@v1", "dst", "--force"), "dst"),
        (("data", "checkout", "--force"), "ds"),
        (("get", "p/m@0.1.0", "-o", "out"), "out"),
        (("get", "p/m@0.1.0", "-o", "out", "--flat"), "out"),
    ],
)
def test_a_crafted_tree_writes_nothing_outside(
    hostile: Path, cli: Cli, project: Path, tmp_path: Path, args: tuple[str, ...], dest: str
) -> None:
    vault_dir = project / ".labvault"
    before = _files(tmp_path, skip=vault_dir)
    out = cli(*args, expect=5)
    assert "malformed" in out.stderr
    new = _files(tmp_path, skip=vault_dir) - before
    assert all(project / dest in p.parents for p in new), new
    assert not list(hostile.iterdir())


def test_models_get_from_python_writes_nothing_outside_the_cache(hostile: Path, project: Path) -> None:
    import labvault as lv
    from labvault.errors import IntegrityError

    cache = project / ".labvault" / "cache" / "models"
    with pytest.raises(IntegrityError, match="malformed"):
        lv.models.get("p/m@0.1.0")
    escaped = [p for p in _files(project / ".labvault", skip=cache) if "escape" in p.name]
    assert escaped == []
    assert not list(hostile.iterdir())


def _set_lock_key(project: Path, old: str, new: str) -> None:
    lock = json.loads((project / "labvault.lock").read_text())
    lock["datasets"][new] = lock["datasets"].pop(old)
    (project / "labvault.lock").write_text(json.dumps(lock))


def test_a_lock_key_through_a_link_is_a_file_in_the_way(cli: Cli, project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli("init", "-q")
    (project / "payload.txt").write_text("payload\n")
    cli("data", "add", "payload", "payload.txt", "-q")
    (project / "lnkdir").symlink_to(elsewhere)
    _set_lock_key(project, "payload.txt", "lnkdir/payload.txt")
    for args in (("data", "checkout"), ("data", "checkout", "--force")):
        out = cli(*args, expect=4)
        assert "lnkdir is a link" in out.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_directory_lock_key_through_a_link_deletes_nothing_there(cli: Cli, project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "sub" / "victim.txt").write_text("precious\n")
    cli("init", "-q")
    (project / "sub").mkdir()
    (project / "sub" / "a.txt").write_text("a\n")
    cli("data", "add", "sub", "sub", "-q")
    (project / "lnkdir").symlink_to(elsewhere)
    _set_lock_key(project, "sub", "lnkdir/sub")
    out = cli("data", "checkout", "--force", expect=4)
    assert "lnkdir is a link" in out.stderr
    assert (elsewhere / "sub" / "victim.txt").read_text() == "precious\n"
    assert sorted(p.name for p in (elsewhere / "sub").iterdir()) == ["victim.txt"]


def test_a_link_where_the_dataset_goes_is_in_the_way(cli: Cli, project: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    cli("init", "-q")
    (project / "payload.txt").write_text("payload\n")
    cli("data", "add", "payload", "payload.txt", "-q")
    (project / "payload.txt").unlink()
    (project / "payload.txt").symlink_to(victim)
    out = cli("data", "checkout", expect=4)
    assert "payload.txt (a link)" in out.stderr
    cli("data", "checkout", "--force")
    assert victim.read_text() == "precious\n"
    assert (project / "payload.txt").read_text() == "payload\n"
    assert not (project / "payload.txt").is_symlink()


@pytest.mark.parametrize(
    "key", ["/abs/payload.txt", "../payload.txt", "a/../../payload.txt", "a//b", "./a", "a\u0000b"]
)
def test_lock_keys_that_leave_the_project_are_refused(cli: Cli, project: Path, key: str) -> None:
    cli("init", "-q")
    (project / "payload.txt").write_text("payload\n")
    cli("data", "add", "payload", "payload.txt", "-q")
    _set_lock_key(project, "payload.txt", key)
    out = cli("data", "checkout", expect=2)
    assert "labvault.lock is malformed" in out.stderr
    out = cli("data", "status", expect=2)


def test_names_the_filesystem_would_fold_together_are_refused_before_writing(vault: Vault, project: Path) -> None:
    from labvault.services.snapshots.checkout import checkout

    (project / "ds").mkdir()
    (project / "ds" / "README.txt").write_text("upper\n")
    (project / "ds" / "readme.txt").write_text("lower\n")
    (project / "ds" / "caf\u00e9.txt").write_text("composed\n")
    (project / "ds" / "cafe\u0301.txt").write_text("decomposed\n")
    vault.data.add("ds", project / "ds")
    with pytest.raises(Conflict, match=r"README.txt and readme.txt"):
        checkout(vault.data, "data:ds@v1", project / "out", force=False, fold=str.casefold)
    with pytest.raises(Conflict, match=r"caf.*\.txt and caf.*\.txt"):
        checkout(vault.data, "data:ds@v1", project / "out", force=False, fold=lambda n: unicodedata.normalize("NFC", n))
    assert not (project / "out").exists()
    checkout(vault.data, "data:ds@v1", project / "out", force=False)  # this filesystem keeps them apart
    assert len(list((project / "out").iterdir())) == 4


def test_the_probe_tells_an_exact_filesystem(tmp_path: Path) -> None:
    from labvault.storage.folding import fold_collisions, name_folding

    assert name_folding(tmp_path / "not" / "yet")("Ab") == "Ab"
    assert fold_collisions(["a", "A"], tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # the probe is gone


def test_get_does_not_follow_a_linked_folder_below_the_destination(cli: Cli, project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli("init", "-q")
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_text("w\n")
    cli("models", "register", "evil/mod", "model", "-q")
    (project / "target").mkdir()
    (project / "target" / "evil").symlink_to(elsewhere)
    out = cli("get", "evil/mod@0.1.0", "-o", "target", expect=4)
    assert "target/evil is a link" in out.stderr
    assert list(elsewhere.iterdir()) == []
    # A link the user typed is followed: ``-o deploy`` where deploy -> /srv/models.
    (project / "deploy").symlink_to(elsewhere)
    cli("get", "evil/mod@0.1.0", "-o", "deploy")
    assert (elsewhere / "evil" / "mod" / "0.1.0" / "w.bin").read_text() == "w\n"
    # A link in the way of a file is not written through.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (project / "flat").mkdir()
    (project / "flat" / "w.bin").symlink_to(victim)
    out = cli("get", "evil/mod@0.1.0", "-o", "flat", "--flat", expect=4)
    assert "flat/w.bin is a link" in out.stderr
    assert victim.read_text() == "precious\n"


def _flip_last_byte(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_object_cat_prints_nothing_of_a_corrupt_object(cli: Cli, project: Path) -> None:
    cli("init", "-q")
    (project / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    digest = cli("object", "put", "big.bin").stdout.strip()
    store = LocalObjectStore(project / ".labvault")
    from labvault.refs import Digest

    _flip_last_byte(store.path_of(Digest(digest.removeprefix("sha256:"))))
    out = cli("object", "cat", digest, expect=5)
    assert out.stdout == ""
    assert "corrupt" in out.stderr


def test_object_cat_output_file_appears_only_verified(cli: Cli, project: Path) -> None:
    cli("init", "-q")
    (project / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    (project / "small.bin").write_bytes(b"small\n")
    big = cli("object", "put", "big.bin").stdout.strip()
    small = cli("object", "put", "small.bin").stdout.strip()
    (project / "got").mkdir()
    cli("object", "cat", small, "-o", "got/small.bin")
    assert (project / "got" / "small.bin").read_bytes() == b"small\n"
    cli("object", "cat", big, "-o", "got/big.bin")
    assert (project / "got" / "big.bin").read_bytes() == (project / "big.bin").read_bytes()
    store = LocalObjectStore(project / ".labvault")
    from labvault.refs import Digest

    _flip_last_byte(store.path_of(Digest(big.removeprefix("sha256:"))))
    (project / "got" / "big.bin").unlink()
    cli("object", "cat", big, "-o", "got/big.bin", expect=5)
    assert sorted(p.name for p in (project / "got").iterdir()) == ["small.bin"]


def test_a_quarantined_object_is_corrupt_not_missing(cli: Cli, project: Path) -> None:
    cli("init", "-q")
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    cli("models", "register", "p/m", "model", "-q")
    digest = cli("object", "put", "model/w.bin").stdout.strip()
    store = LocalObjectStore(project / ".labvault")
    from labvault.refs import Digest

    _flip_last_byte(store.path_of(Digest(digest.removeprefix("sha256:"))))
    cli("fsck", expect=1)
    for args in (("object", "cat", digest), ("object", "cat", digest[:20]), ("get", "p/m@0.1.0", "-o", "out")):
        out = cli(*args, expect=5)
        assert "quarantine" in out.stderr, args
    assert not any(p.is_file() for p in (project / "out").rglob("w.bin"))


def test_a_damaged_tree_cache_is_ignored_rebuilt_and_reported(cli: Cli, project: Path) -> None:
    import hashlib

    cli("init", "-q")
    (project / "ds").mkdir()
    for i in range(31):
        (project / "ds" / f"f{i:02d}.csv").write_text(f"row,{i}\n" * (i + 1))
    cli("data", "add", "ds", "ds", "-q")
    (cache,) = (project / ".labvault" / "cache" / "trees").glob("*.bin")
    f05 = hashlib.sha256((project / "ds" / "f05.csv").read_bytes()).digest()
    f15 = hashlib.sha256((project / "ds" / "f15.csv").read_bytes()).digest()
    raw = cache.read_bytes()
    assert raw.count(f15) == 1
    cache.write_bytes(raw.replace(f15, f05))
    out = cli("fsck", expect=1)
    assert cache.name in out.stdout + out.stderr
    cli("fsck")  # the damaged entry went: the next run is clean
    cache.write_bytes(raw.replace(f15, f05))
    cli("data", "checkout", "data:ds@v1", "copy")
    got = sorted(p.name for p in (project / "copy").iterdir())
    assert len(got) == 31
    for name in got:
        assert (project / "copy" / name).read_bytes() == (project / "ds" / name).read_bytes(), name
    assert cache.read_bytes() != raw.replace(f15, f05)  # rebuilt


def test_register_records_links_and_refuses_ones_that_leave_the_folder(cli: Cli, project: Path, tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0\n")
    cli("init", "-q")
    ml = project / "ml"
    (ml / "sub").mkdir(parents=True)
    (ml / "w.bin").write_text("weights\n")
    (ml / "latest.bin").symlink_to("w.bin")
    (ml / "sub" / "up.bin").symlink_to("../w.bin")
    (ml / "pw").symlink_to(secret)
    out = cli("models", "register", "p/m", "ml", expect=2)
    assert "ml/pw" in out.stderr
    assert "--follow-links" in out.stderr
    (ml / "pw").unlink()
    (ml / "esc").symlink_to("../../passwd")
    out = cli("models", "register", "p/m", "ml", expect=2)
    assert "ml/esc" in out.stderr
    (ml / "esc").unlink()
    cli("models", "register", "p/m", "ml", "-q")
    cli("get", "p/m@0.1.0", "-o", "out")
    got = project / "out" / "p" / "m" / "0.1.0"
    assert os.readlink(got / "latest.bin") == "w.bin"
    assert os.readlink(got / "sub" / "up.bin") == "../w.bin"
    assert (got / "latest.bin").read_text() == "weights\n"
    cli("get", "p/m@0.1.0", "-o", "out")  # a second get finds the links in place
    # --follow-links copies what a link points at, outside the folder included.
    (ml / "pw").symlink_to(secret)
    cli("models", "register", "p/m", "ml", "--follow-links", "-q")
    cli("get", "p/m@0.1.1", "-o", "out")
    copied = project / "out" / "p" / "m" / "0.1.1" / "pw"
    assert not copied.is_symlink()
    assert copied.read_text() == "root:x:0:0\n"


def test_register_without_follow_links_stores_no_bytes_of_a_link_target(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:unique-marker-3f9c\n")
    cli("init", "-q")
    (project / "ml").mkdir()
    (project / "ml" / "w.bin").write_text("weights\n")
    (project / "ml" / "pw").symlink_to(secret)
    cli("models", "register", "p/m", "ml", expect=2)
    from labvault.refs import Digest

    store = LocalObjectStore(project / ".labvault")
    for row in json.loads(cli("object", "ls", "--json").stdout):
        assert b"unique-marker-3f9c" not in store.get_bytes(Digest(row["id"]))


def test_an_output_file_that_is_a_link_is_replaced_not_written_through(cli: Cli, project: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("precious\n")
    cli("init", "-q")
    (project / "d.txt").write_text("d\n")
    cli("data", "add", "d", "d.txt", "-q")
    (project / "m.json").symlink_to(victim)
    cli("data", "manifest", "data:d@v1", "-o", "m.json")
    assert victim.read_text() == "precious\n"
    assert json.loads((project / "m.json").read_text())["ref"] == "data:d@v1"


def test_get_refuses_names_the_filesystem_would_fold_together(vault: Vault, project: Path) -> None:
    from labvault.services.registry.layout import write_version

    (project / "model").mkdir()
    (project / "model" / "W.bin").write_text("upper\n")
    (project / "model" / "w.bin").write_text("lower\n")
    version, _ = vault.registry.register("p/m", project / "model")
    with pytest.raises(Conflict, match=r"W.bin and w.bin"):
        write_version(vault.objects, version.content, project / "out", ".", fold=str.casefold)
    assert not (project / "out").exists()
    vault.registry.materialize("p/m@0.1.0", project / "out", flat=True)  # this filesystem keeps them apart
    assert (project / "out" / "W.bin").read_text() == "upper\n"
