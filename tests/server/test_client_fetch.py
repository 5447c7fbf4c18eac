"""Downloads of whole trees through a server come in batches: a model version (``models get``,
``lv.models.get``), a data snapshot (``get data:``, ``data checkout``) and a run's artifacts
(``runs artifacts -o``), each of 500 small files in folders, cost a handful of requests (counted in
the server's request log), not one per file, and every byte written is the byte stored.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from tests.server.conftest import Served
from tests.server.test_client_models import World

# The team-vault half runs with LABVAULT_TEST_FULL=1 (test_client_data and test_api cross it by default).
TEAM_BY_DEFAULT = False

FILES = 500
#: The most requests a download of FILES files may take: the version check, the record, the
#: folders a level per batch, the files in one batch (and a few to spare); one per file was 500+.
HANDFUL = 10

MAKE = (
    "import os, random, sys\n"
    "rng = random.Random(5)\n"
    "root = sys.argv[1]\n"
    f"for i in range({FILES}):\n"
    "    folder = os.path.join(root, f'part{i % 5}', f'sub{i % 2}')\n"
    "    os.makedirs(folder, exist_ok=True)\n"
    "    open(os.path.join(folder, f'f{i:03d}.bin'), 'wb').write(rng.randbytes(rng.randrange(1, 3000)))\n"
)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    """On the server's machine: a model of FILES files, the same files as a dataset, and a run whose
    output folder holds them."""
    w = World.fresh(served, tmp_path_factory)
    root = served.root
    w.local("run", "-o", "bulk", "--name", "bulk", "--", sys.executable, "-c", MAKE, "bulk")
    w.run_id = json.loads(w.local("runs", "list", "--filter", "name = 'bulk'", "--json").stdout)[0]["id"]
    assert len(_files(root / "bulk")) == FILES
    w.local("models", "register", "bulk/many", "bulk", "--version", "1.0.0")
    w.local("data", "add", "bulk", "bulk")
    return w


def _requests(served: Served) -> list[str]:
    """Every request the server logged so far, as ``METHOD path``."""
    out = []
    for line in served.procs[0].log_path.read_text().splitlines():  # type: ignore[attr-defined]
        try:
            doc = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        if isinstance(doc, dict) and "method" in doc and "path" in doc:
            out.append(f"{doc['method']} {doc['path']}")
    return out


def _counted(world: World, *args: str) -> list[str]:
    """The requests ``labvault ARGS`` made, starting with an empty object cache."""
    shutil.rmtree(world.home / "cache", ignore_errors=True)
    before = len(_requests(world.served))
    world.server(*args, role="reader")
    return _requests(world.served)[before:]


def _same_bytes(written: Path, source: Path) -> None:
    got, want = _files(written), _files(source)
    assert len(want) == FILES
    for rel, data in want.items():
        assert hashlib.sha256(got[rel]).digest() == hashlib.sha256(data).digest(), rel


def test_models_get_of_500_files_is_a_handful_of_requests(world: World) -> None:
    seen = _counted(world, "models", "get", "bulk/many@1.0.0", "-o", "models", "--flat")
    assert len(seen) <= HANDFUL, seen
    assert not [r for r in seen if r.startswith("GET /api/v1/objects/")], seen  # no object fetched alone
    _same_bytes(world.client / "models", world.served.root / "bulk")
    # Files already in place are not fetched again, only the folders that list them.
    again = _counted(world, "models", "get", "bulk/many@1.0.0", "-o", "models", "--flat")
    batches = [r for r in seen if r.endswith("/objects/batch/get")]
    assert [r for r in again if r.endswith("/objects/batch/get")] == batches[:-1], again


def test_lv_models_get_of_500_files_is_a_handful_of_requests(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import labvault as lv
    from labvault import model_api

    world.from_python(monkeypatch, tmp_path)
    before = len(_requests(world.served))
    try:
        path = lv.models.get("bulk/many@1.0.0")
    finally:
        model_api._close_servers()
    seen = _requests(world.served)[before:]
    assert len(seen) <= HANDFUL, seen
    _same_bytes(path, world.served.root / "bulk")


def test_runs_artifacts_of_500_files_is_a_handful_of_requests(world: World) -> None:
    seen = _counted(world, "runs", "artifacts", world.run_id, "-o", "artifacts")
    assert len(seen) <= HANDFUL, seen
    _same_bytes(world.client / "artifacts" / "bulk", world.served.root / "bulk")


@pytest.mark.parametrize(
    "args",
    [("get", "data:bulk@v1", "-o", "got", "--flat"), ("data", "checkout", "data:bulk@v1", "checked")],
    ids=["get", "checkout"],
)
def test_a_snapshot_of_500_files_is_a_handful_of_requests(world: World, args: tuple[str, ...]) -> None:
    seen = _counted(world, *args)
    assert len(seen) <= HANDFUL, seen
    _same_bytes(world.client / args[3], world.served.root / "bulk")


def test_a_tampered_cache_entry_is_fetched_again(world: World, tmp_path: Path) -> None:
    """The cache the batches fill is verified on every read: an entry tampered with is fetched
    again from the server, never written out."""
    _counted(world, "models", "get", "bulk/many@1.0.0", "-o", str(tmp_path / "first"), "--flat")
    cache = world.home / "cache" / "labvault" / "objects"
    entries = [p for p in cache.rglob("*") if p.is_file() and len(p.parent.name) == 2]
    assert entries
    victim = random.Random(1).choice(entries)
    victim.write_bytes(b"tampered")
    world.server("models", "get", "bulk/many@1.0.0", "-o", str(tmp_path / "fresh"), "--flat", role="reader")
    _same_bytes(tmp_path / "fresh", world.served.root / "bulk")
