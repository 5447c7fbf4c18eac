"""``vault.remotes``: push and pull through the Python API, SQLite and PostgreSQL on the sending side."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import labvault as lv
from labvault.errors import Conflict, IntegrityError, NotFound, ValidationError
from labvault.services.remotes import TransferResult
from labvault.vault import Vault


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    return tmp_path / "nas"


@pytest.fixture
def other(tmp_path: Path, nas: Path) -> Iterator[Vault]:
    """A second vault with the same remote."""
    folder = tmp_path / "other"
    folder.mkdir()
    v, _ = Vault.init(folder)
    v.remotes.add("nas", str(nas), default=True)
    yield v
    v.close()


def _trained(vault: Vault, project: Path) -> str:
    """A finished run with params, metrics, tags, a config, an input snapshot and artifacts; its id."""
    (project / "tx.csv").write_text("amount\n1\n2\n")
    vault.data.add("tx", project / "tx.csv")
    (project / "conf.yaml").write_text("lr: 0.1\n")
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_bytes(b"\x07" * 3000)
    with lv.start_run(project="fraud", name="base", config="conf.yaml", inputs=["data:tx@v1"], seed=3) as run:
        run.log_params({"depth": 4})
        for step in range(5):
            run.log_metric("loss", 1 / (step + 1), step=step)
        run.set_tags({"team": "fraud"})
        run.log_artifact(project / "model")
    return run.info.id


def test_push_then_pull_a_model_with_its_run_and_data(any_vault: Vault, project: Path, nas: Path, other: Vault) -> None:
    run_id = _trained(any_vault, project)
    version, _ = any_vault.registry.register("fraud/detector", project / "model", run=f"run:{run_id}")
    any_vault.remotes.add("nas", str(nas))
    pushed = any_vault.remotes.push([version.ref])
    assert isinstance(pushed, TransferResult)
    assert [(m.ref, m.action) for m in pushed.records] == [
        ("data:tx@v1", "new"),
        (f"run:{run_id}", "new"),
        ("fraud/detector@0.1.0", "new"),
    ]
    assert pushed.objects_sent > 0
    assert not any_vault.remotes.push([version.ref]).changed

    pulled = other.remotes.pull(["fraud/detector@0.1.0"])
    assert {m.action for m in pulled.records} == {"new"}
    run = other.runs.get(f"run:{run_id}")
    original = any_vault.runs.get(f"run:{run_id}")
    assert (run.params, run.metrics, run.tags, run.inputs) == (
        original.params,
        original.metrics,
        original.tags,
        original.inputs,
    )
    assert [p.value for p in other.runs.history(f"run:{run_id}", "loss")["loss"]] == [1, 0.5, 1 / 3, 0.25, 0.2]
    got = other.registry.resolve("fraud/detector@0.1.0")
    assert (got.content, got.run_id) == (version.content, run_id)
    assert other.data.resolve("data:tx@v1").content_hash == any_vault.data.resolve("data:tx@v1").content_hash
    assert other.maintenance.fsck().clean
    # The lineage of the received model reaches the run and its data.
    up = json.dumps(other.lineage.upstream("fraud/detector@0.1.0").to_json())
    assert f"run:{run_id}" in up
    assert "data:tx@v1" in up


def test_no_data_leaves_the_inputs_behind(vault: Vault, project: Path, nas: Path) -> None:
    run_id = _trained(vault, project)
    vault.remotes.add("nas", str(nas))
    pushed = vault.remotes.push([f"run:{run_id}"], no_data=True)
    assert [m.ref for m in pushed.records] == [f"run:{run_id}"]


def test_conflict_and_rename_on_push(vault: Vault, project: Path, nas: Path, other: Vault) -> None:
    (other.root / "d.txt").write_text("theirs")
    other.data.add("d", other.root / "d.txt")
    other.remotes.push(["data:d@v1"])
    (project / "d.txt").write_text("mine")
    vault.data.add("d", project / "d.txt")
    vault.remotes.add("nas", str(nas))
    with pytest.raises(Conflict, match=r"data:d@v1 differs"):
        vault.remotes.push(["data:d@v1"])
    moved = vault.remotes.push(["data:d@v1"], rename=True).records
    assert [(m.action, m.target) for m in moved] == [("renamed", "data:d@v2")]


def test_dry_run_moves_nothing(vault: Vault, project: Path, nas: Path) -> None:
    (project / "d.txt").write_text("x")
    vault.data.add("d", project / "d.txt")
    vault.remotes.add("nas", str(nas))
    result = vault.remotes.push(["data:d@v1"], dry_run=True)
    assert result.dry_run
    assert result.objects_sent == 2
    assert not nas.exists()


def test_remote_settings(vault: Vault, nas: Path) -> None:
    vault.remotes.add("a", str(nas))
    vault.remotes.add("a", str(nas))  # the same again: fine
    with pytest.raises(Conflict):
        vault.remotes.add("a", str(nas / "elsewhere"))
    vault.remotes.add("b", f"file://{nas}2", default=True)
    assert [(r.name, r.default) for r in vault.remotes.list()] == [("a", False), ("b", True)]
    assert vault.remotes.get().name == "b"
    config = json.loads((vault.dir / "config.json").read_text())
    assert config["remotes"]["b"] == {"kind": "folder", "url": f"{nas}2"}
    vault.remotes.remove("b")
    assert vault.remotes.get().name == "a"
    with pytest.raises(NotFound):
        vault.remotes.remove("b")
    for bad in ("s3://key:secret@bucket/x", "http://u:p@host", "http://host?x=1", "ftp://x", "file://host/x", "\0"):
        with pytest.raises(ValidationError):
            vault.remotes.add("c", bad)


def test_a_crafted_run_on_the_remote_is_refused(vault: Vault, project: Path, nas: Path, other: Vault) -> None:
    run_id = _trained(vault, project)
    vault.remotes.add("nas", str(nas))
    vault.remotes.push([f"run:{run_id}"], no_data=True)
    db = sqlite3.connect(nas / ".labvault" / "meta.db")
    db.execute("UPDATE run_artifacts SET name = '../../escape' WHERE run_id = ?", (run_id,))
    db.commit()
    with pytest.raises(IntegrityError, match="relative path"):
        other.remotes.pull([f"run:{run_id}"])
    db.execute("UPDATE run_artifacts SET name = 'model' WHERE run_id = ?", (run_id,))
    db.execute("UPDATE runs SET capture = '[[[[' WHERE id = ?", (run_id,))
    db.commit()
    db.close()
    with pytest.raises(IntegrityError, match="capture"):
        other.remotes.pull([f"run:{run_id}"])
    with pytest.raises(NotFound):
        other.runs.get(f"run:{run_id}")


def test_is_pushed_answers_the_no_op_push_from_the_lock(vault: Vault, project: Path, nas: Path) -> None:
    (project / "d.txt").write_text("1")
    vault.data.add("d", project / "d.txt")
    vault.remotes.add("nas", str(nas))
    assert vault.remotes.is_pushed() is None  # no vault there yet
    vault.remotes.push()
    done = vault.remotes.is_pushed()
    assert done is not None
    assert [(m.ref, m.action) for m in done.records] == [("data:d@v1", "present")]
    (project / "d.txt").write_text("2")
    vault.data.add("d", project / "d.txt")  # the lock now names data:d@v2, which the remote lacks
    assert vault.remotes.is_pushed() is None
    assert [m.ref for m in vault.remotes.push().records] == ["data:d@v2"]


def test_objects_above_the_memory_limit_stream_and_are_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labvault.errors import IntegrityError as _Integrity
    from labvault.services.remotes import copy as copy_mod
    from labvault.storage.objects.local import LocalObjectStore

    monkeypatch.setattr(copy_mod, "_BIG", 1000)  # objects above 1000 bytes take the streaming path
    src, dst = LocalObjectStore.create(tmp_path / "a"), LocalObjectStore.create(tmp_path / "b")
    size = (1 << 20) + 3000  # stored loose (packed objects travel a pack span at a time)
    big, small = src.put_bytes(b"x" * size), src.put_bytes(b"y" * 10)
    assert not src.is_packed(big)
    stats = copy_mod.copy_objects(src, dst, [big, small], where="a", jobs=1)
    assert (stats.objects, stats.bytes, stats.present) == (2, size + 10, 0)
    assert dst.get_bytes(big) == b"x" * size
    assert dst.get_bytes(small) == b"y" * 10
    again = copy_mod.copy_objects(src, dst, [big, small], where="a", jobs=1)
    assert (again.objects, again.present) == (0, 2)

    bad = src.put_bytes(b"z" * size)
    from tests.corruption import flip_byte

    flip_byte(src, bad)  # same name, other bytes
    other = LocalObjectStore.create(tmp_path / "c")
    with pytest.raises(_Integrity, match="corrupt"):
        copy_mod.copy_objects(src, other, [bad], where="a", jobs=1)
    assert not other.has(bad)
