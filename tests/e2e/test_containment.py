"""Containment through the installed ``labvault`` executable: no write leaves its destination.

Stored data (tree entries, lock-file keys, model names) is untrusted: a crafted tree or lock file
must not make labvault write outside the folder it was asked to write to, nor through a link.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

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
    store = LocalObjectStore(vault_dir)
    root = _hostile_tree(store, outside)
    with store.batch():
        v = _raw_tree(store, [{"name": "0.1.0", "sha256": root, "size": 20, "type": "dir"}])
        m = _raw_tree(store, [{"name": "m", "sha256": v, "size": 20, "type": "dir"}])
        wrap = _raw_tree(store, [{"name": "p", "sha256": m, "size": 20, "type": "dir"}])
    with sqlite3.connect(vault_dir / "meta.db") as conn:
        conn.execute("UPDATE data_snapshots SET content_hash = ?", (root,))
        conn.execute("UPDATE registry_versions SET tree = ?, content = ?", (wrap, root))
        conn.execute("UPDATE object_refs SET digest = ? WHERE owner = 'data:ds@v1'", (root,))
        conn.execute("UPDATE object_refs SET digest = ? WHERE owner = 'p/m@0.1.0'", (wrap,))
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
