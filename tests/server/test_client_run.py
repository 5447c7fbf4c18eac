"""``labvault run -- CMD`` through a server (``LABVAULT_URI``): the run is created, captured and ended
on the server as the same command records it on the server's own vault (code, environment, config,
seed, stdout/stderr, declared outputs, exit status). The real executable, on SQLite and on the team
vault (PostgreSQL + S3)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labvault.vault import Vault
from tests.server.conftest import Served, error_of, serve
from tests.server.test_client_models import World

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"

# Writes to both streams, logs a metric to the wrapper's run from inside, writes the declared output
# and exits 3: the run is "failed (exit code 3)" either way.
SCRIPT = (
    "import os, sys; import labvault as lv; print('hello out', flush=True); print('to err', file=sys.stderr); "
    "lv.log_metric('loss', 0.5); os.makedirs('out/sub', exist_ok=True); open('out/model.bin', 'w').write('w'); "
    "open('out/sub/notes.txt', 'w').write('n'); sys.exit(3)"
)
CONFIG = "lr: 0.1\ndepth: 4\n"
# What differs between two runs of the same command by nature: who, where, when, which process.
VOLATILE = ("id", "ref", "started_at", "ended_at", "duration_seconds", "user", "host", "pid", "cwd", "environment")


# The team vault's half (PostgreSQL + S3, two server processes) under LABVAULT_TEST_FULL=1: its start
# alone would take this module past its share of the suite's time.
@pytest.fixture(
    scope="module", params=["sqlite", *([pytest.param("team", marks=pytest.mark.postgres)] if FULL else [])]
)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(request, tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("client")
    client, home = base / "work", base / "home"
    client.mkdir()
    home.mkdir()
    for where in (client, served.root):
        (where / "cfg.yaml").write_text(CONFIG)
    return World(served, client, home, "", "")


def _wrapped(world: World, through_server: bool) -> tuple[str, dict[str, Any]]:
    args = ("run", "--name", "wrapped", "-c", "cfg.yaml", "-o", "out", "--seed", "5", "--", sys.executable, "-c")
    ran = world.server(*args, SCRIPT, expect=3) if through_server else world.local(*args, SCRIPT, expect=3)
    assert ran.stdout == "hello out\n"  # streamed through while recorded
    assert "to err" in ran.stderr
    assert "failed (exit code 3)" in ran.stderr
    run_id = ran.stderr.split("run:")[1].split()[0]
    with Vault.open(world.served.root) as vault:  # both runs live in the server's vault: read in-process
        return run_id, json.loads(json.dumps(vault.runs.export(run_id), default=str))


def test_run_is_recorded_on_the_server_like_locally(world: World) -> None:
    local_id, local = _wrapped(world, through_server=False)
    server_id, through = _wrapped(world, through_server=True)
    assert through["cwd"] == str(world.client)  # the client's folder, as text
    assert through["environment"]["sha256"].startswith("sha256:")
    assert through["environment"]["python"] == local["environment"]["python"]
    assert (through["status"], through["exit_code"], through["error"]) == ("failed", 3, "exit code 3")
    assert through["stdout"] is not None
    assert through["stdout"] == local["stdout"]  # the same bytes: the same object
    assert through["config"][0]["content"] == CONFIG
    assert through["metrics"] == {"loss": 0.5}
    assert {a["name"]: a["output"] for a in through["artifacts"]} == {"out": True}
    for key in VOLATILE:
        local.pop(key)
        through.pop(key)
    # The same notes, each naming its own folder.
    local["capture_warnings"] = [w.replace(str(world.served.root), "HERE") for w in local["capture_warnings"]]
    through["capture_warnings"] = [w.replace(str(world.client), "HERE") for w in through["capture_warnings"]]
    assert through == local
    assert local_id != server_id


def test_run_of_a_missing_command_through_the_server(world: World) -> None:
    ran = world.server("run", "--", "no-such-command-xyz", expect=127)
    assert "failed (exit code 127)" in ran.stderr  # the server's run, as the wrapper read it back


def test_run_needs_the_writer_role(world: World, tmp_path: Path) -> None:
    ran = world.server("run", "--", sys.executable, "-c", "print('never')", role="reader", expect=8)
    assert "never" not in ran.stdout


def test_registered_folder_records_the_clients_path(world: World) -> None:
    """The version's ``source.path`` is the folder the client registered, as registering it locally
    records it (not the server's temporary copy); the server keeps it as text and never opens it."""
    folder = world.client / "models" / "m1"
    folder.mkdir(parents=True)
    (folder / "model.bin").write_text("weights")
    done = json.loads(world.server("models", "register", "proj/sourced", "models/m1", "--json").stdout)
    assert done["source"] == {"path": str(folder.resolve())}
    shown = json.loads(world.local("models", "show", "proj/sourced@0.1.0", "--json").stdout)
    assert shown["source"] == {"path": str(folder.resolve())}


def test_digest_prefixes_resolve_on_the_server(world: World) -> None:
    """``object cat`` takes a unique prefix of 8+ hex digits through a server as it does locally."""
    data = b"prefixed bytes\n"
    hexd = hashlib.sha256(data).hexdigest()
    assert world.served.client("writer").put(f"/objects/sha256:{hexd}", content=data).status_code in (200, 201)
    assert world.server("object", "cat", hexd[:10]).stdout == "prefixed bytes\n"
    unknown = "sha256:" + ("0123456789" if not hexd.startswith("0123456789") else "9876543210")
    local = world.local("object", "cat", unknown, expect=3)
    through = world.server("object", "cat", unknown, expect=3)
    assert through.stderr.splitlines()[0] == local.stderr.splitlines()[0]


def test_get_a_snapshot_through_the_server(world: World, tmp_path: Path) -> None:
    """``labvault get data:NAME@vN -o DIR`` writes the snapshot's verified files to DIR/NAME/vN/ (or
    into DIR with --flat), through a server as on the server's own vault."""
    for where in (world.served.root, world.client):
        (where / "ds" / "sub").mkdir(parents=True, exist_ok=True)
        (where / "ds" / "a.csv").write_text("x\n1\n")
        (where / "ds" / "sub" / "b.txt").write_text("b")
    world.local("data", "add", "getme", "ds")
    local = world.local("get", "data:getme@v1", "-o", str(tmp_path / "local"), "--json")
    through = world.server("get", "data:getme@v1", "-o", str(tmp_path / "server"), "--json")
    assert json.loads(through.stdout)["path"] == str(tmp_path / "server" / "getme" / "v1")
    assert json.loads(through.stdout)["ref"] == json.loads(local.stdout)["ref"] == "data:getme@v1"
    assert (tmp_path / "server" / "getme" / "v1" / "sub" / "b.txt").read_text() == "b"
    assert (tmp_path / "server" / "getme" / "v1" / "a.csv").read_text() == "x\n1\n"
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.csv").write_text("changed")  # a different file in the way: nothing written
    world.server("get", "data:getme@v1", "-o", str(flat), "--flat", expect=4)
    assert sorted(p.name for p in flat.iterdir()) == ["a.csv"]
    assert (flat / "a.csv").read_text() == "changed"


def test_the_capture_route_checks_what_a_client_sends(world: World) -> None:
    """The capture and artifact bodies are untrusted: plain-text paths, stored objects only, running
    runs only, and a folder artifact only once every object of it is stored."""
    w = world.served.client("writer")
    rid = w.post("/runs", json={"name": "captured"}).json()["id"]
    data = b"environment document"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    error_of(w.post(f"/runs/{rid}/capture", json={"cwd": "/home/a\x1b[2Jb"}), 400, 2)
    error_of(w.post(f"/runs/{rid}/capture", json={"environment": digest}), 404, 3)  # not uploaded
    error_of(w.post(f"/runs/{rid}/capture", json={"stdout": "sha256:abc"}), 400, 2)
    tree = json.dumps(
        {"format": "labvault.tree/1", "entries": [{"name": "m", "type": "file", "sha256": "0" * 64, "size": 1}]}
    )
    tree_digest = hashlib.sha256(tree.encode()).hexdigest()
    assert w.put(f"/objects/sha256:{tree_digest}", content=tree.encode()).status_code in (200, 201)
    body = {"name": "out", "digest": f"sha256:{tree_digest}", "kind": "tree", "role": "output"}
    error_of(w.post(f"/runs/{rid}/artifacts", json=body), 404, 3)  # the file it names is not stored
    assert w.put(f"/objects/{digest}", content=data).status_code in (200, 201)
    done = w.post(f"/runs/{rid}/capture", json={"environment": digest, "cwd": "/home/a"})
    assert done.status_code == 200, done.text
    assert w.post(f"/runs/{rid}/end", json={"status": "finished"}).status_code == 200
    error_of(w.post(f"/runs/{rid}/capture", json={"cwd": "/elsewhere"}), 409, 4)  # ended: never changed
    error_of(world.served.client("reader").post(f"/runs/{rid}/capture", json={}), 403, 8)
