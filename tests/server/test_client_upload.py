"""Uploads of whole folders through a server go in batches, as ``data add`` sends them: registering
a model from a folder (``models register``) and logging a folder as a run's artifact
(``run.log_artifact``), each of 500 small files in folders, cost a handful of object requests (counted
in the server's request log), not one per file; a file bigger than a chunk still goes up in chunks;
and every byte read back is the byte sent.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import Served
from tests.server.test_client_fetch import FILES, HANDFUL, _files, _requests
from tests.server.test_client_models import World

# The team-vault half runs with LABVAULT_TEST_FULL=1 (test_client_data and test_api cross it by default).
TEAM_BY_DEFAULT = False

BIG = 9 << 20  # over the client's 8 MiB chunk size


def _make(folder: Path, *, seed: int) -> Path:
    rng = random.Random(seed)
    for i in range(FILES):
        sub = folder / f"part{i % 5}" / f"sub{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}.bin").write_bytes(rng.randbytes(rng.randrange(1, 3000)))
    return folder


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A client-side folder with no vault, holding folders of FILES small files to upload."""
    return World.fresh(served, tmp_path_factory)


def _python(world: World, script: str) -> str:
    """Run ``script`` in the client folder with a writer's token; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=world.client,
        env=world.env("writer"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _objects(seen: list[str]) -> list[str]:
    return [r for r in seen if "/api/v1/objects" in r]


def _same(written: Path, source: Path) -> None:
    got, want = _files(written), _files(source)
    assert got.keys() >= want.keys()
    for rel, data in want.items():
        assert got[rel] == data, rel


def test_registering_a_model_of_500_files_is_a_handful_of_requests(world: World) -> None:
    folder = _make(world.client / "many", seed=1)
    before = len(_requests(world.served))
    world.server("models", "register", "up/many", "many", "--version", "1.0.0", role="writer")
    seen = _requests(world.served)[before:]
    assert len(seen) <= HANDFUL, seen
    assert not [r for r in seen if r.startswith("PUT ")], seen  # nothing sent alone
    world.server("models", "get", "up/many@1.0.0", "-o", "got-many", "--flat", role="reader")
    _same(world.client / "got-many", folder)
    # Registering the same content again sends no object: the server has them all.
    again_before = len(_requests(world.served))
    world.server("models", "register", "up/many", "many", "--version", "1.0.0", role="writer")
    again = _objects(_requests(world.served)[again_before:])
    assert again == ["POST /api/v1/objects/missing"], again


def test_a_big_model_file_still_goes_up_in_pieces(world: World) -> None:
    folder = world.client / "big"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(random.Random(2).randbytes(BIG))
    (folder / "config.json").write_text(json.dumps({"layers": 3}))
    before = len(_requests(world.served))
    world.server("models", "register", "up/big", "big", "--version", "1.0.0", role="writer")
    seen = _objects(_requests(world.served)[before:])
    # The big file goes up in pieces: one upload session committed, or chunks composed where the
    # server's objects are in object storage (the team vault answers no session).
    assert [r for r in seen if r.endswith(("/commit", "/compose"))], seen
    assert [r for r in seen if r.endswith("/objects/batch")], seen  # the small ones together
    world.server("models", "get", "up/big@1.0.0", "-o", "got-big", "--flat", role="reader")
    _same(world.client / "got-big", folder)


def test_logging_an_artifact_folder_of_500_files_is_a_handful_of_requests(world: World) -> None:
    folder = _make(world.client / "outputs", seed=3)
    script = (
        "import labvault as lv\n"
        "with lv.start_run(project='up', name='art') as run:\n"
        "    art = run.log_artifact('outputs')\n"
        "    print(run.id, art.kind, art.size)\n"
    )
    before = len(_requests(world.served))
    out = _python(world, script)
    seen = _objects(_requests(world.served)[before:])
    assert len(seen) <= HANDFUL, seen
    assert not [r for r in seen if r.startswith("PUT ")], seen
    run_id, kind, size = out.split()
    assert (kind, int(size)) == ("tree", sum(len(b) for b in _files(folder).values()))
    world.server("runs", "artifacts", run_id, "-o", "arts", role="reader")
    _same(world.client / "arts" / "outputs", folder)


def test_logging_a_file_artifact_through_a_server_records_its_bytes(world: World) -> None:
    data = random.Random(4).randbytes(5000)
    (world.client / "weights.bin").write_bytes(data)
    script = (
        "import labvault as lv\n"
        "with lv.start_run(project='up', name='file') as run:\n"
        "    art = run.log_artifact('weights.bin', name='model/w.bin')\n"
        "    print(run.id, art.name, art.kind, art.size)\n"
    )
    out = _python(world, script)
    run_id, name, kind, size = out.split()
    assert (name, kind, int(size)) == ("model/w.bin", "file", len(data))
    world.server("runs", "artifacts", run_id, "-o", "one", role="reader")
    assert (world.client / "one" / "model" / "w.bin").read_bytes() == data
