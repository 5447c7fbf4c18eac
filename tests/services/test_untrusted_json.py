"""JSON files that someone else may have written are read through the one bounded loader (safeload).

An installed distribution's ``direct_url.json`` (any package can write one) and the model cache's stamp
(a file in the vault folder, edited by hand or by anyone) must never crash a command: the first becomes a
capture warning, the second only makes the cached copy be rebuilt.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.errors import IntegrityError, ValidationError
from labvault.services.audit import parse_anchor
from labvault.services.capture.environment import capture_environment
from labvault.services.snapshots.tabular import profile_stream
from labvault.services.tracking.export import compare_runs, export_run
from labvault.storage.objects.tree import decode_tree
from labvault.vault import Vault

DEEP = "[" * 100_000  # json.loads raises RecursionError on it
HOSTILE = {
    "deep": DEEP,
    "a list": "[]",
    "not JSON": "{",
    "a list for vcs_info": json.dumps({"url": "https://example.com/x", "vcs_info": [1], "dir_info": "editable"}),
}


def _distribution(site: Path, direct_url: str) -> None:
    info = site / "hostile_pkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-pkg\nVersion: 1.0\n")
    (info / "direct_url.json").write_text(direct_url)


@pytest.mark.parametrize("direct_url", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_direct_url_json_is_a_capture_warning(
    direct_url: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _distribution(tmp_path / "site", direct_url)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    data, warnings = capture_environment(project, cached=False)
    doc = json.loads(data)
    packages = {p["name"]: p for p in doc["packages"]}  # the rest of the list is still recorded
    assert "pytest" in packages
    hostile = packages["hostile-pkg"]
    assert hostile["version"] == "1.0"
    if direct_url.startswith('{"url"'):  # a usable URL, with the parts of the wrong shape left out
        assert hostile["source"] == {"url": "https://example.com/x"}
        assert warnings == [w for w in warnings if "hostile-pkg" not in w]
    else:
        assert "source" not in hostile
        [warning] = [w for w in warnings if "hostile-pkg" in w]
        assert warning.startswith("environment: packages: hostile-pkg's direct_url.json")


def _labvault(project: Path, *args: str, expect: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
    """The real executable, as the e2e suite runs it: exit code checked, no traceback."""
    exe = shutil.which("labvault", path=str(Path(sys.executable).parent)) or "labvault"
    full_env = {**os.environ, "NO_COLOR": "1", **env}
    proc = subprocess.run([exe, *args], cwd=project, env=full_env, capture_output=True, text=True, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == expect, proc.stderr
    return proc


def test_a_deep_direct_url_json_is_a_warning_of_labvault_run(project: Path, tmp_path: Path) -> None:
    """Through the real executable: the run is recorded, the warning shown, no traceback."""
    _distribution(tmp_path / "site", DEEP)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _labvault(project, *args, PYTHONPATH=str(tmp_path / "site"))

    run("-q", "init")
    run("run", "--", sys.executable, "-c", "pass")
    [listed] = json.loads(run("runs", "list", "--json").stdout)
    shown = json.loads(run("runs", "show", listed["id"], "--json").stdout)
    [warning] = [w for w in shown["capture_warnings"] if "hostile-pkg" in w]
    assert "nested more than 100 deep" in warning


@pytest.mark.parametrize(
    "stamp",
    [DEEP, "[]", '{"content": [], "files": 1}', "\udcff"],
    ids=["deep", "a list", "wrong shapes", "not UTF-8"],
)
def test_a_hostile_model_cache_stamp_is_ignored_and_rebuilt(stamp: str, vault: Vault, project: Path) -> None:
    (project / "model").mkdir()
    (project / "model" / "model.bin").write_bytes(b"weights")
    version, _ = vault.registry.register("fraud/detector", project / "model")
    copy = vault.registry.get(version.ref)
    stamp_path = vault.dir / "cache" / "models" / "fraud" / "detector" / ".0.1.0.stamp.json"
    assert json.loads(stamp_path.read_text())["content"] == version.content.hex
    before = (copy / "model.bin").stat()
    (copy / "model.bin").write_bytes(b"weightz")  # same size and mtime: only a rebuild puts the bytes back
    os.utime(copy / "model.bin", ns=(before.st_atime_ns, before.st_mtime_ns))
    stamp_path.write_text(stamp, encoding="utf-8", errors="surrogateescape")
    again = vault.registry.get(version.ref)
    assert again == copy
    assert (again / "model.bin").read_bytes() == b"weights"
    assert json.loads(stamp_path.read_text())["content"] == version.content.hex


# -- other JSON read from elsewhere ---------------------------------------------------------------
def test_a_deeply_nested_tree_object_is_corrupt_not_a_crash() -> None:
    """Tree objects may exceed safeload's 10 MiB and are integrity errors (exit 5), so tree.py guards itself."""
    with pytest.raises(IntegrityError, match="malformed") as err:
        decode_tree(DEEP.encode())
    assert err.value.exit_code == 5


def test_a_deeply_nested_jsonl_line_skips_tabular_stats(project: Path, vault: Vault) -> None:
    stats = profile_stream("rows.jsonl", io.BytesIO(b'{"a": 1}\n' + DEEP.encode() + b"\n"))
    assert stats == {"note": "tabular stats skipped: line 2 is nested too deep"}
    (project / "rows.jsonl").write_text('{"a": 1}\n{"a": ' + DEEP + "\n")
    snap, _ = vault.data.add("rows", project / "rows.jsonl")  # never fails a snapshot
    [entry] = vault.data.get(snap.ref).files
    assert entry.note is not None
    assert "nested too deep" in entry.note


def test_an_audit_anchor_file_nested_deep_is_not_an_audit_head(tmp_path: Path) -> None:
    anchor = tmp_path / "head.json"
    anchor.write_text('{"head": ' + DEEP)
    with pytest.raises(ValidationError, match="is not an audit head") as err:
        parse_anchor(str(anchor))
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("document", "error"),
    [('{"packages": ' + DEEP, "nested more than 100 deep"), ("[]", "not a JSON object")],
    ids=["deep", "a list"],
)
def test_a_hostile_environment_object_is_shown_as_unreadable(vault: Vault, document: str, error: str) -> None:
    """A run's environment document comes from the object store (and, later, from remotes)."""
    run = vault.runs.create(capture=False)
    hostile = vault.objects.put_bytes(document.encode())
    run = dataclasses.replace(run, capture={**run.capture, "environment": str(hostile)})
    env = export_run(vault.runs, run)["environment"]
    assert env["sha256"] == str(hostile)
    assert error in env["error"]
    assert compare_runs(vault.runs, [run, run])["environment"]["package_versions"] == {}


def test_audit_verify_against_a_deep_json_file_is_exit_2(project: Path) -> None:
    _labvault(project, "-q", "init")
    (project / "head.json").write_text('{"head": ' + DEEP)
    proc = _labvault(project, "audit", "verify", "--against", "head.json", expect=2)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "is not an audit head" in proc.stderr
