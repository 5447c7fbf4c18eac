"""Registering versions, reading them back, and materialising verified copies."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from labvault.errors import Conflict, IntegrityError, NotFound, ValidationError
from labvault.vault import Vault
from tests.corruption import corrupt_object


def make_model(root: Path, name: str = "model", *, weights: bytes = b"weights", metrics: dict | None = None) -> Path:
    folder = root / name
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(weights)
    (folder / "sub" / "config.txt").write_text("layers: 3\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_register_first_version_is_0_1_0_then_next_patch(any_vault: Vault, project: Path) -> None:
    model = make_model(project)
    first, created = any_vault.registry.register("fraud/detector", model)
    assert (first.version, created) == ("0.1.0", True)
    (model / "model.bin").write_bytes(b"better")
    second, _ = any_vault.registry.register("fraud/detector", model)
    assert second.version == "0.1.1"
    third, _ = any_vault.registry.register("fraud/detector", model, bump="minor")
    assert third.version == "0.2.0"
    fourth, _ = any_vault.registry.register("fraud/detector", model, bump="major")
    assert fourth.version == "1.0.0"
    explicit, _ = any_vault.registry.register("fraud/detector@3.1.4", model)
    assert explicit.version == "3.1.4"
    assert [v.version for v in any_vault.registry.versions("fraud/detector")] == [
        "0.1.0",
        "0.1.1",
        "0.2.0",
        "1.0.0",
        "3.1.4",
    ]


def test_version_tree_layout_and_checksums(vault: Vault, project: Path) -> None:
    model = make_model(project)
    version, _ = vault.registry.register("fraud/detector", model, message="first")
    paths = {f.path for f in vault.registry.files(version)}
    assert paths == {"model.bin", "sub/config.txt", "metrics.json", "run.json", "data_manifest.json", "checksum.txt"}
    out = project / "out"
    _, target = vault.registry.materialize("fraud/detector@0.1.0", out)
    assert target == out / "fraud" / "detector" / "0.1.0"
    listing = (target / "checksum.txt").read_text()
    assert "checksum.txt" not in listing
    assert len(listing.splitlines()) == 5
    for line in listing.splitlines():
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256((target / rel).read_bytes()).hexdigest() == digest
    proc = subprocess.run(["sha256sum", "-c", "checksum.txt"], cwd=target, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((target / "metrics.json").read_text()) == {}
    assert json.loads((target / "data_manifest.json").read_text()) == []


def test_identical_content_is_a_noop_and_different_content_a_conflict(any_vault: Vault, project: Path) -> None:
    model = make_model(project)
    any_vault.registry.register("fraud/detector", model, version="1.0.0")
    again, created = any_vault.registry.register("fraud/detector", model, version="1.0.0")
    assert not created
    assert again.version == "1.0.0"
    (model / "model.bin").write_bytes(b"changed")
    with pytest.raises(Conflict, match="already exists with different content"):
        any_vault.registry.register("fraud/detector", model, version="1.0.0")
    events = any_vault.registry.audit.events(action="register")
    assert len(events) == 1


def test_user_files_named_like_generated_ones_are_kept(vault: Vault, project: Path) -> None:
    model = make_model(project, metrics={"auc": 0.97})
    (model / "run.json").write_text('{"mine": true}')
    version, _ = vault.registry.register("fraud/detector", model)
    assert any("metrics.json is the one from the model folder" in n for n in version.notes)
    assert any("run.json" in n for n in version.notes)
    assert vault.registry.metrics(version) == {"auc": 0.97}
    copy = vault.registry.get("fraud/detector@0.1.0")
    assert json.loads((copy / "run.json").read_text()) == {"mine": True}


def test_checksum_txt_in_the_folder_is_verified_first(vault: Vault, project: Path) -> None:
    model = make_model(project)
    good = hashlib.sha256(b"weights").hexdigest()
    (model / "checksum.txt").write_text(f"{good}  model.bin\n")
    version, _ = vault.registry.register("fraud/detector", model)
    assert any("verified" in n for n in version.notes)
    (model / "checksum.txt").write_text(f"{'0' * 64}  model.bin\n")
    with pytest.raises(IntegrityError, match="does not match"):
        vault.registry.register("fraud/detector", model)
    (model / "checksum.txt").write_text(f"{good}  gone.bin\n")
    with pytest.raises(IntegrityError, match="not in"):
        vault.registry.register("fraud/detector", model)
    assert [v.version for v in vault.registry.versions("fraud/detector")] == ["0.1.0"]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("fraud/detector", {"version": "1.2"}, "invalid version"),
        ("fraud/detector", {"version": "01.2.3"}, "invalid version"),
        ("fraud/detector", {"version": "1.0.0", "bump": "minor"}, "exclude"),
        ("fraud/detector", {"bump": "huge"}, "invalid --bump"),
        ("fraud/detector@prod", {}, "alias"),
        ("fraud/detector@1.0.0", {"version": "2.0.0"}, "disagree"),
        ("fraud", {}, "unrecognised reference"),
        ("fraud/../x", {}, "invalid"),
    ],
)
def test_bad_register_input(vault: Vault, project: Path, name: str, kwargs: dict, message: str) -> None:
    model = make_model(project)
    with pytest.raises(ValidationError, match=message):
        vault.registry.register(name, model, **kwargs)


def test_empty_folder_and_missing_path(vault: Vault, project: Path) -> None:
    (project / "empty").mkdir()
    with pytest.raises(ValidationError, match="holds no files"):
        vault.registry.register("fraud/detector", project / "empty")
    with pytest.raises(NotFound):
        vault.registry.register("fraud/detector", project / "nope")
    with pytest.raises(ValidationError, match="nothing to register"):
        vault.registry.register("fraud/detector")


def test_single_file_registers(vault: Vault, project: Path) -> None:
    (project / "model.onnx").write_bytes(b"onnx")
    version, _ = vault.registry.register("fraud/detector", project / "model.onnx")
    assert "model.onnx" in {f.path for f in vault.registry.files(version)}


def test_resolve_unknown_things(any_vault: Vault, project: Path) -> None:
    any_vault.registry.register("fraud/detector", make_model(project))
    with pytest.raises(NotFound, match="no model"):
        any_vault.registry.resolve("fraud/other@1.0.0")
    with pytest.raises(NotFound, match=r"no version 9\.9\.9"):
        any_vault.registry.resolve("fraud/detector@9.9.9")
    with pytest.raises(NotFound, match="no alias"):
        any_vault.registry.resolve("fraud/detector@prod")
    with pytest.raises(ValidationError, match="names no version"):
        any_vault.registry.resolve("fraud/detector")


def test_get_returns_a_verified_cached_copy_rebuilt_when_changed(vault: Vault, project: Path) -> None:
    vault.registry.register("fraud/detector", make_model(project))
    vault.registry.promote("fraud/detector@0.1.0", "prod")
    path = vault.registry.get("fraud/detector@prod")
    assert (path / "model.bin").read_bytes() == b"weights"
    assert vault.registry.get("fraud/detector@0.1.0") == path
    (path / "model.bin").write_bytes(b"tampered!")
    again = vault.registry.get("fraud/detector@prod")
    assert (again / "model.bin").read_bytes() == b"weights"


def test_materialize_flat_and_conflicts(vault: Vault, project: Path) -> None:
    vault.registry.register("fraud/detector", make_model(project))
    out = project / "flat"
    _, target = vault.registry.materialize("fraud/detector@0.1.0", out, flat=True)
    assert target == out
    assert (out / "model.bin").is_file()
    vault.registry.materialize("fraud/detector@0.1.0", out, flat=True)  # same content: fine
    (out / "model.bin").write_bytes(b"other")
    with pytest.raises(Conflict, match="exists with other content"):
        vault.registry.materialize("fraud/detector@0.1.0", out, flat=True)


def test_corrupt_object_is_refused_on_get(vault: Vault, project: Path) -> None:
    version, _ = vault.registry.register("fraud/detector", make_model(project, weights=b"w" * 1000))
    blob = next(f for f in vault.registry.files(version) if f.path == "model.bin")
    corrupt_object(vault.objects, blob.digest, b"x" * 1000)
    with pytest.raises(IntegrityError):
        vault.registry.materialize("fraud/detector@0.1.0", project / "out")


def test_archive_hides_version_and_blocks_alias_moves(any_vault: Vault, project: Path) -> None:
    model = make_model(project)
    any_vault.registry.register("fraud/detector", model)
    (model / "model.bin").write_bytes(b"v2")
    any_vault.registry.register("fraud/detector", model)
    any_vault.registry.promote("fraud/detector@0.1.1", "prod")
    with pytest.raises(Conflict, match="prod"):
        any_vault.registry.archive("fraud/detector@0.1.1")
    archived, changed = any_vault.registry.archive("fraud/detector@0.1.0", reason="bad data")
    assert changed
    assert archived.archived
    assert not any_vault.registry.archive("fraud/detector@0.1.0")[1]
    assert [v.version for v in any_vault.registry.versions("fraud/detector")] == ["0.1.1"]
    assert len(any_vault.registry.versions("fraud/detector", include_archived=True)) == 2
    with pytest.raises(ValidationError, match="archived"):
        any_vault.registry.promote("fraud/detector@0.1.0", "staging")
    # numbers are never reused: the next version skips past the archived ones
    (model / "model.bin").write_bytes(b"v3")
    assert any_vault.registry.register("fraud/detector", model)[0].version == "0.1.2"
    # content kept
    assert any_vault.registry.materialize("fraud/detector@0.1.0", project / "o")[1].is_dir()


def test_versions_are_referenced_for_fsck_and_gc(vault: Vault, project: Path) -> None:
    vault.registry.register("fraud/detector", make_model(project))
    report = vault.maintenance.fsck()
    assert report.clean
    gc = vault.maintenance.gc(grace=0)
    assert not gc.deleted
    assert vault.registry.materialize("fraud/detector@0.1.0", project / "o")[1].is_dir()


def test_models_listing(vault: Vault, project: Path) -> None:
    vault.registry.register("fraud/detector", make_model(project))
    vault.registry.register("churn/model", make_model(project))
    vault.registry.promote("fraud/detector@0.1.0", "prod")
    models = {m.ref: m for m in vault.registry.models()}
    assert set(models) == {"fraud/detector", "churn/model"}
    assert models["fraud/detector"].aliases == {"prod": "0.1.0"}
    assert models["fraud/detector"].latest == "0.1.0"


# -- run linkage --------------------------------------------------------------------------------
def _trained_run(vault: Vault, project: Path) -> tuple[str, Path]:
    model = make_model(project)
    run = vault.runs.create(name="train", capture=False, background_git=False)
    vault.runs.log_metrics(run.id, [("auc", 0.91, 0), ("auc", 0.94, 1), ("loss", 0.2, 1)])
    vault.runs.log_artifact(run.id, model, name="model")
    vault.runs.log_bytes(run.id, b"notes", name="notes.txt")
    vault.runs.finish(run.id)
    return run.ref, model


def test_register_from_a_run_artifact(vault: Vault, project: Path) -> None:
    run, _ = _trained_run(vault, project)
    version, _ = vault.registry.register("fraud/detector", run=run, artifact="model")
    assert version.run_id == run.removeprefix("run:")
    assert version.source == {"run": run, "artifact": "model"}
    copy = vault.registry.get(version.ref)
    assert json.loads((copy / "metrics.json").read_text()) == {"auc": 0.94, "loss": 0.2}
    assert json.loads((copy / "run.json").read_text())["ref"] == run
    assert (copy / "model.bin").read_bytes() == b"weights"
    with pytest.raises(ValidationError, match="say which"):
        vault.registry.register("fraud/detector", run=run)
    with pytest.raises(NotFound, match="no artifact"):
        vault.registry.register("fraud/detector", run=run, artifact="nope")
    with pytest.raises(NotFound):
        vault.registry.register("fraud/detector", run="run:abcdef123456", artifact="model")


def test_registering_a_recorded_output_must_match_the_record(vault: Vault, project: Path) -> None:
    run, model = _trained_run(vault, project)
    version, _ = vault.registry.register("fraud/detector", model, run=run)
    assert any("matches artifact model" in n for n in version.notes)
    (model / "model.bin").write_bytes(b"retouched")
    with pytest.raises(Conflict, match="differs from artifact model"):
        vault.registry.register("fraud/detector", model, run=run)
    modified, _ = vault.registry.register("fraud/detector", model, run=run, allow_modified=True)
    assert any("--allow-modified" in n for n in modified.notes)


def test_an_unreadable_input_snapshot_is_named_not_fatal(vault: Vault, project: Path) -> None:
    vault.runs.pin_input = None  # a record written without the check (an older vault): its input is unknown here
    run = vault.runs.create(name="train", inputs=["data:nothing@v1"], capture=False, background_git=False)
    vault.runs.log_artifact(run.id, make_model(project), name="model")
    vault.runs.finish(run.id)
    version, _ = vault.registry.register("fraud/detector", run=run.ref)
    assert any("data:nothing@v1" in n for n in version.notes)
    manifest = json.loads((vault.registry.get(version.ref) / "data_manifest.json").read_text())
    assert manifest[0]["ref"] == "data:nothing@v1"
    assert "error" in manifest[0]


def test_versions_beyond_64_bits_are_refused(vault: Vault, project: Path) -> None:
    model = make_model(project)
    with pytest.raises(ValidationError, match="larger than"):
        vault.registry.register("fraud/detector", model, version="99999999999999999999.0.0")
    top = f"0.0.{2**63 - 1}"
    vault.registry.register("fraud/detector", model, version=top)
    (model / "model.bin").write_bytes(b"next")
    with pytest.raises(ValidationError, match="larger than"):
        vault.registry.register("fraud/detector", model)  # the next patch would not fit
    assert [v.version for v in vault.registry.versions("fraud/detector")] == [top]
