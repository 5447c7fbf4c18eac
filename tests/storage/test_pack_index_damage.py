"""A pack index whose SQLite pages are damaged is set aside in quarantine/ and rebuilt from the packs.

The index is a cache (docs/design/storage-format.md, *Packs*): "database disk image is malformed"
or "file is not a database" met at open or at first use must not leave every command failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from tests.e2e.conftest import Cli
from tests.e2e.conftest import cli as cli  # the real executable, as in tests/e2e

OBJECTS = 400  # enough rows for the index to span several b-tree pages


def _payload(i: int) -> bytes:
    return f"object {i:04d} ".encode() + hashlib.sha256(str(i).encode()).digest() * (1 + i % 4)


def _store_with_index(vault_dir: Path) -> tuple[dict[Digest, bytes], Path]:
    store = LocalObjectStore.create(vault_dir)
    with store.batch():
        originals = {store.put_bytes(_payload(i)): _payload(i) for i in range(OBJECTS)}
    store.close()
    index = store.packs.index_path
    with contextlib.closing(sqlite3.connect(index)) as conn:  # fold the WAL in: the damage lands in what is read
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return originals, index


def _damage(index: Path, where: str) -> None:
    raw = bytearray(index.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    assert len(raw) >= 4 * page, "the index should span several pages"
    if where == "header":  # the file header's magic: "file is not a database"
        raw[0:16] = b"\xff" * 16
    elif where == "schema":  # page 1's b-tree header, after the 100-byte file header
        raw[100:108] = b"\xff" * 8
    else:  # every other page's b-tree header: "database disk image is malformed"
        for start in range(page, len(raw), page):
            raw[start : start + 8] = b"\xff" * 8
    index.write_bytes(bytes(raw))


def _set_aside(vault_dir: Path) -> list[str]:
    quarantine = vault_dir / "quarantine"
    return (
        sorted(p.name for p in quarantine.iterdir() if p.name.startswith("index.sqlite")) if quarantine.exists() else []
    )


@pytest.mark.parametrize("where", ["pages", "schema", "header"])
def test_a_damaged_pack_index_is_set_aside_and_rebuilt(tmp_path: Path, where: str) -> None:
    vault_dir = tmp_path / "v"
    originals, index = _store_with_index(vault_dir)
    _damage(index, where)

    store = LocalObjectStore(vault_dir)
    try:
        for digest, data in originals.items():
            assert store.get_bytes(digest) == data
        assert {info.digest for info in store.iter_objects()} == set(originals)
    finally:
        store.close()

    aside = _set_aside(vault_dir)
    assert any(name.startswith("index.sqlite.") for name in aside)  # kept for a post-mortem, never read again
    store = LocalObjectStore(vault_dir)  # the next command finds a sound index
    try:
        assert all(store.get_bytes(d) == data for d, data in originals.items())
    finally:
        store.close()
    assert _set_aside(vault_dir) == aside


def test_cli_commands_work_after_the_pack_index_is_damaged(cli: Cli, project: Path) -> None:
    cli("init")
    folder = project / "many"
    folder.mkdir()
    for i in range(OBJECTS):
        (folder / f"f{i}.bin").write_bytes(_payload(i))
    cli("data", "add", "many", "many")
    vault_dir = project / ".labvault"
    index = vault_dir / "objects" / "packs" / "index.sqlite"
    with contextlib.closing(sqlite3.connect(index)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(index, "pages")

    proc = cli("fsck", "--json")
    assert json.loads(proc.stdout)["clean"] is True
    assert "Traceback" not in proc.stderr
    cli("data", "checkout", "data:many@v1", "restored")
    assert all((project / "restored" / f"f{i}.bin").read_bytes() == _payload(i) for i in range(OBJECTS))
    assert len([n for n in _set_aside(vault_dir) if n.startswith("index.sqlite.")]) == 1
    assert os.path.exists(index)


def test_the_index_is_not_set_aside_under_an_open_batch(tmp_path: Path) -> None:
    vault_dir = tmp_path / "v"
    originals, index = _store_with_index(vault_dir)
    store = LocalObjectStore(vault_dir)
    try:
        with store.batch():
            store.put_bytes(b"staged, its row not yet committed")
            assert store.packs.set_aside() is False  # its staged rows name a pack by its id in this index
            assert index.exists()
        assert store.packs.set_aside() is True  # the batch committed: nothing names the old index any more
        assert not index.exists()
        assert all(store.get_bytes(d) == data for d, data in originals.items())
        assert store.get_bytes(Digest(hashlib.sha256(b"staged, its row not yet committed").hexdigest()))
    finally:
        store.close()
