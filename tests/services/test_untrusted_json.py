"""JSON files that someone else may have written are read through the one bounded loader (safeload).

An installed distribution's ``direct_url.json`` (any package can write one) and the model cache's stamp
(a file in the vault folder, edited by hand or by anyone) must never crash a command: the first becomes a
capture warning, the second only makes the cached copy be rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.services.capture.environment import capture_environment
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


def test_a_deep_direct_url_json_is_a_warning_of_labvault_run(project: Path, tmp_path: Path) -> None:
    """Through the real executable: the run is recorded, the warning shown, no traceback."""
    exe = shutil.which("labvault", path=str(Path(sys.executable).parent)) or "labvault"
    _distribution(tmp_path / "site", DEEP)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(tmp_path / "site")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([exe, *args], cwd=project, env=env, capture_output=True, text=True, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 0, proc.stderr
        return proc

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
