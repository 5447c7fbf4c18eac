"""vault.data: add, manifests, identity, Merkle sharing, ignore rules, links, bad input."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from labvault.errors import NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.objects.tree import decode_tree
from labvault.vault import Vault
from tests.corruption import flip_byte

from .conftest import write_tree

MANIFEST_KEYS = {
    "dataset_name", "version", "storage_uri", "file_count", "total_bytes", "tabular", "record_count",
    "schema_hash", "content_hash", "created_at", "created_by", "message", "files",
}  # fmt: skip


def test_add_folder_records_a_complete_manifest(vault: Vault, dataset: Path) -> None:
    snap, created = vault.data.add("raw", dataset, message="first cut")
    assert created
    assert snap.ref == "data:raw@v1"
    doc = vault.data.get("data:raw@v1").to_json()
    assert set(doc) >= MANIFEST_KEYS
    assert doc["dataset_name"] == "raw"
    assert doc["version"] == "v1"
    assert doc["storage_uri"] == "data"
    assert doc["file_count"] == 5
    assert doc["total_bytes"] == sum(f.stat().st_size for f in dataset.rglob("*") if f.is_file() and not f.is_symlink())
    assert doc["tabular"] is True
    assert doc["record_count"] == 3 + 2
    assert str(doc["schema_hash"]).startswith("sha256:")
    assert doc["content_hash"] == str(snap.content_hash)
    assert doc["created_by"] == "tester@example.com"
    assert str(doc["created_at"]).endswith("Z")
    assert doc["message"] == "first cut"
    files = {f["path"]: f for f in doc["files"]}  # type: ignore[attr-defined]
    assert set(files) == {"train.csv", "events.jsonl", "images/a.bin", "images/b.bin", "notes/readme.txt"}
    assert files["train.csv"]["record_count"] == 3
    assert files["train.csv"]["schema"] == [
        {"name": "id", "type": "int"},
        {"name": "score", "type": "float"},
        {"name": "label", "type": "string"},
    ]
    assert files["events.jsonl"]["schema"] == [{"name": "t", "type": "float"}, {"name": "kind", "type": "string"}]
    assert "record_count" not in files["images/a.bin"]
    assert doc["links"] == [{"path": "latest.csv", "target": "train.csv"}]
    json.dumps(doc)  # serialisable as is


def test_identical_content_returns_the_existing_version(vault: Vault, dataset: Path) -> None:
    first, _ = vault.data.add("raw", dataset)
    again, created = vault.data.add("raw", dataset, message="same")
    assert not created
    assert again.ref == first.ref
    assert [s.ref for s in vault.data.log("raw")] == ["data:raw@v1"]


def test_new_version_shares_unchanged_subtrees(vault: Vault, dataset: Path) -> None:
    v1, _ = vault.data.add("raw", dataset)
    (dataset / "notes" / "readme.txt").write_text("changed\n")
    v2, created = vault.data.add("raw", dataset)
    assert created
    assert v2.version == 2
    t1 = {e.name: e for e in decode_tree(vault.objects.get_bytes(v1.content_hash))}
    t2 = {e.name: e for e in decode_tree(vault.objects.get_bytes(v2.content_hash))}
    assert t1["images"].digest == t2["images"].digest
    assert t1["notes"].digest != t2["notes"].digest
    assert t1["images"].size == 150


def test_identical_files_are_stored_once(vault: Vault, project: Path) -> None:
    write_tree(project / "a", {"x.bin": b"same" * 1000, "y.bin": b"same" * 1000})
    write_tree(project / "b", {"z.bin": b"same" * 1000})
    vault.data.add("a", project / "a")
    before = {o.digest for o in vault.objects.iter_objects()}
    vault.data.add("b", project / "b")
    after = {o.digest for o in vault.objects.iter_objects()}
    assert len(after - before) == 1  # only b's root tree is new


def test_single_file_is_a_one_entry_tree(vault: Vault, project: Path) -> None:
    write_tree(project, {"table.tsv": "a\tb\n1\tx\n"})
    snap, _ = vault.data.add("t", project / "table.tsv")
    assert snap.kind == "file"
    assert snap.storage_uri == "table.tsv"
    (entry,) = decode_tree(vault.objects.get_bytes(snap.content_hash))
    assert entry.name == "table.tsv"
    assert entry.extra["record_count"] == 1
    with vault.data.open("data:t@v1", "table.tsv") as f:
        assert f.read() == b"a\tb\n1\tx\n"


def test_symlinked_argument_is_resolved_and_links_inside_are_kept(vault: Vault, dataset: Path, project: Path) -> None:
    (project / "alias").symlink_to(dataset)
    snap, _ = vault.data.add("raw", project / "alias")
    assert snap.storage_uri == "data"
    assert vault.data.get(snap.ref).links[0].target == "train.csv"


def test_labvaultignore_excludes_files(vault: Vault, dataset: Path) -> None:
    (dataset / ".labvaultignore").write_text("*.bin\nnotes/\n")
    manifest = vault.data.get(vault.data.add("raw", dataset)[0].ref)
    paths = {f.path for f in manifest.files}
    assert paths == {".labvaultignore", "train.csv", "events.jsonl"}


def test_nested_labvaultignore_applies_below_its_folder(vault: Vault, dataset: Path) -> None:
    (dataset / "images" / ".labvaultignore").write_text("a.bin\n")
    paths = {f.path for f in vault.data.get(vault.data.add("raw", dataset)[0].ref).files}
    assert "images/a.bin" not in paths
    assert "images/b.bin" in paths


def test_malformed_csv_is_a_plain_file_with_a_note(vault: Vault, project: Path) -> None:
    write_tree(project / "d", {"bad.csv": 'a,b\n1,"open\n', "ragged.csv": "a,b\n1,2,3\n"})
    snap, created = vault.data.add("d", project / "d")
    assert created
    assert snap.tabular is False
    assert snap.record_count is None
    assert snap.schema_hash is None
    assert len(snap.notes) == 2
    assert all("tabular stats skipped" in n for n in snap.notes)


def test_parquet_counts_and_schema(vault: Vault, project: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (project / "p").mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3], "name": ["a", "b", None]}), project / "p" / "t.parquet")
    (file,) = vault.data.get(vault.data.add("p", project / "p")[0].ref).files
    assert file.record_count == 3
    assert file.schema == (("x", "int64"), ("name", "string"))


def test_lock_file_pins_each_path(vault: Vault, dataset: Path, project: Path) -> None:
    vault.data.add("raw", dataset)
    write_tree(project, {"other.csv": "a\n1\n"})
    vault.data.add("other", project / "other.csv")
    doc = json.loads((project / "labvault.lock").read_text())
    assert list(doc["datasets"]) == ["data", "other.csv"]
    assert doc["datasets"]["data"]["ref"] == "data:raw@v1"
    assert doc["datasets"]["other.csv"]["kind"] == "file"


def test_listing_and_log(vault: Vault, dataset: Path) -> None:
    vault.data.add("raw", dataset)
    (dataset / "new.txt").write_text("n")
    vault.data.add("raw", dataset, message="more")
    rows = vault.data.datasets()
    assert [(s.ref, n) for s, n in rows] == [("data:raw@v2", 2)]
    assert [s.message for s in vault.data.log("raw")] == ["more", ""]
    entries = vault.data.ls("data:raw", "images")
    assert [e["path"] for e in entries] == ["images/a.bin", "images/b.bin"]
    top = {e["path"]: e["type"] for e in vault.data.ls("data:raw@v2")}
    assert top["images"] == "dir"
    assert top["latest.csv"] == "link"
    assert top["new.txt"] == "file"


def test_fsck_is_clean_and_gc_keeps_snapshot_objects(vault: Vault, dataset: Path) -> None:
    snap, _ = vault.data.add("raw", dataset)
    assert vault.maintenance.fsck().clean
    report = vault.maintenance.gc(grace=0)
    assert report.deleted == ()
    assert vault.data.get(snap.ref).files


@pytest.mark.parametrize(
    ("name", "path", "error"),
    [
        ("bad/name", "data", ValidationError),
        ("..", "data", ValidationError),
        ("ok", "missing", ValidationError),
        ("ok", ".labvault", ValidationError),
        ("ok", ".labvault/objects", ValidationError),
    ],
)
def test_bad_input_is_refused(vault: Vault, dataset: Path, name: str, path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        vault.data.add(name, vault.root / path)
    assert vault.data.datasets() == []


def test_sockets_are_refused(vault: Vault, project: Path) -> None:
    (project / "d").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(project / "d" / "s.sock"))
    try:
        with pytest.raises(ValidationError, match="socket"):
            vault.data.add("d", project / "d")
    finally:
        sock.close()


def test_unknown_references(vault: Vault, dataset: Path) -> None:
    with pytest.raises(NotFound):
        vault.data.get("data:nope")
    vault.data.add("raw", dataset)
    with pytest.raises(NotFound, match="data:raw@v9"):
        vault.data.get("data:raw@v9")
    with pytest.raises(ValidationError):
        vault.data.get("run:abcdef")
    with pytest.raises(NotFound):
        vault.data.open("data:raw", "no/such.txt")


def test_open_verifies_bytes(vault: Vault, dataset: Path) -> None:
    from labvault.errors import IntegrityError

    snap, _ = vault.data.add("raw", dataset)
    file = next(f for f in vault.data.get(snap.ref).files if f.path == "notes/readme.txt")
    flip_byte(vault.objects, Digest(file.sha256.hex))
    with pytest.raises(IntegrityError), vault.data.open(snap.ref, "notes/readme.txt") as f:
        f.read()


def test_works_on_postgres_too(any_vault: Vault, project: Path) -> None:
    write_tree(project / "d", {"a.csv": "x\n1\n2\n"})
    _snap, _ = any_vault.data.add("d", project / "d")
    (project / "d" / "a.csv").write_text("x\n1\n2\n3\n")
    snap2, _ = any_vault.data.add("d", project / "d")
    assert [s.version for s in any_vault.data.log("d")] == [2, 1]
    assert any_vault.data.get(snap2.ref).snapshot.record_count == 3
    assert any_vault.data.resolve("data:d").ref == "data:d@v2"
    assert any_vault.maintenance.fsck().clean
