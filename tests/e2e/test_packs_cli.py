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


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x5A]))


def test_cli_a_damaged_pack_loses_only_its_damaged_record_and_fsck_reads_its_framing(cli: Cli, project: Path) -> None:
    cli("init")
    names = [f"r{i:03d}.bin" for i in range(100)]
    for name in names:
        (project / name).write_text(os.urandom(60).hex())
    digests = [o["ref"] for o in json.loads(cli("object", "put", "--json", *names).stdout)]
    packs = project / ".labvault" / "objects" / "packs"
    [pack] = sorted(packs.glob("*.pack"))
    raw = pack.read_bytes()
    tenth = raw.index(bytes.fromhex(digests[10].removeprefix("sha256:"))) - 4  # record 10's magic
    eleventh = raw.index(bytes.fromhex(digests[11].removeprefix("sha256:"))) - 4
    _flip(pack, tenth + 1)  # its magic: framing damaged, bytes intact
    _flip(pack, eleventh + 60)  # record 11's bytes: corrupt
    doc = json.loads(cli("fsck", "--json", expect=1).stdout)  # the index still finds every object...
    assert any(pack.name in p and f"offset {tenth}" in p for p in doc["problems"])  # ...fsck reads the framing
    assert [c["ref"] for c in doc["corrupt"]] == [digests[11]]

    for suffix in ("", "-wal", "-shm"):  # lose the index: it is rebuilt from the packs
        (packs / f"index.sqlite{suffix}").unlink(missing_ok=True)
    size = pack.stat().st_size
    listed = {o["ref"] for o in json.loads(cli("object", "ls", "--json").stdout)}
    assert listed == set(digests) - {digests[11]}  # 99 of 100: record 10's bytes were intact
    assert cli("object", "cat", digests[10]).stdout == (project / names[10]).read_text()
    cli("object", "cat", digests[11], expect=5)  # quarantined by fsck: corrupt, not missing
    assert pack.stat().st_size == size  # nothing cut
    cli("gc", "--grace", "14d")  # rewrites the damaged pack
    assert json.loads(cli("fsck", "--json").stdout)["clean"] is True
    assert cli("object", "cat", digests[10]).stdout == (project / names[10]).read_text()
