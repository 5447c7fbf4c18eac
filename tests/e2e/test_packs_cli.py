"""Packed small objects through the executable: gc reclaims pack space, fsck names a lost pack."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.conftest import Cli


def test_cli_fsck_names_a_missing_pack_and_the_objects_lost_with_it(cli: Cli, project: Path) -> None:
    cli("init")
    folder = project / "many"
    folder.mkdir()
    for i in range(100):
        (folder / f"f{i}.bin").write_bytes(os.urandom(3000))
    cli("data", "add", "many", "many")
    assert json.loads(cli("fsck", "--json").stdout)["clean"] is True
    [pack] = sorted((project / ".labvault" / "objects" / "packs").glob("*.pack"))
    pack.unlink()
    proc = cli("fsck", "--json", expect=1)
    doc = json.loads(proc.stdout)
    assert any(f"pack {pack.name} is missing" in p for p in doc["problems"])
    assert doc["missing"][0]["referenced_by"] == ["data:many@v1"]  # its root tree went with the pack
    assert proc.stderr.startswith("error: ")
    cli("data", "checkout", "many", "restored", expect=5)


def test_cli_gc_reports_the_pack_space_it_reclaims(cli: Cli, project: Path) -> None:
    cli("init")
    for i in range(60):
        (project / f"g{i}.bin").write_bytes(os.urandom(4000))
    with_batch = ["object", "put", *(str(project / f"g{i}.bin") for i in range(60))]
    cli(*with_batch)
    doc = json.loads(cli("gc", "--grace", "0", "--json").stdout)
    assert len(doc["deleted"]) == 60
    assert doc["pack_bytes_reclaimed"] >= 60 * 4000
    assert json.loads(cli("object", "ls", "--json").stdout) == []
    assert json.loads(cli("fsck", "--json").stdout)["clean"] is True
