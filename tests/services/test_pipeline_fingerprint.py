"""The stage key's environment fingerprint reads what tracking's environment capture records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from labvault.services.capture.environment import capture_environment
from labvault.services.pipelines.fingerprint import current_fingerprint


def test_fingerprint_has_the_python_and_packages_a_run_records(tmp_path: Path) -> None:
    doc = json.loads(capture_environment(tmp_path, cached=False)[0])
    fp = current_fingerprint(tmp_path / "cache")
    assert fp.doc["python"] == doc["python"]["version"]
    assert fp.doc["packages"] == {p["name"].lower(): p["version"] for p in doc["packages"]}
    again = current_fingerprint(tmp_path / "cache")  # from the cache, keyed on the sys.path folders' stat
    assert again.digest == fp.digest


def test_an_installed_distribution_changes_the_fingerprint(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    before = current_fingerprint(tmp_path / "cache")
    info = site / "fakepkg-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 2.0\n")
    sys.path.append(str(site))
    try:
        after = current_fingerprint(tmp_path / "cache")
    finally:
        sys.path.remove(str(site))
    assert before.digest != after.digest
    assert after.doc["packages"]["fakepkg"] == "2.0"
