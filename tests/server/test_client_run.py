"""``labvault run -- CMD`` through a server (``LABVAULT_URI``): the run is created, captured and ended
on the server as the same command records it on the server's own vault (code, environment, config,
seed, stdout/stderr, declared outputs, exit status). The real executable, on SQLite and on the team
vault (PostgreSQL + S3)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labvault.vault import Vault
from tests.server.conftest import Served, error_of
from tests.server.test_client_models import World

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
# The team vault's half (PostgreSQL + S3, two server processes) runs with LABVAULT_TEST_FULL=1.
TEAM_BY_DEFAULT = False

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


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World.fresh(served, tmp_path_factory)
    for where in (w.client, served.root):
        (where / "cfg.yaml").write_text(CONFIG)
    return w


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


# A training script using the Python API: the same file, run through the server from the client's
# folder and on the server's own vault. It writes its run's id and its pid beside it.
TRAIN = """\
import json, os, sys
import labvault as lv

with lv.start_run(name="fit", config="cfg.yaml", tags={"team": "a"}, seed=5) as run:
    print("hello out")
    print("to err", file=sys.stderr)
    run.log_params({"lr": 0.1, "depth": 4})
    for i in range(5):
        run.log_metric("loss", i * 0.5)
    open(sys.argv[1], "w").write(json.dumps({"id": run.id, "pid": os.getpid()}))
"""


def _git_project(where: Path) -> Path:
    """A git work tree with one commit (the same hash wherever it is made) and a dirty change."""
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    env.update(GIT_AUTHOR_NAME="a", GIT_AUTHOR_EMAIL="a@x", GIT_COMMITTER_NAME="a", GIT_COMMITTER_EMAIL="a@x")
    folder = where / "api-project"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    (folder / "cfg.yaml").write_text(CONFIG)
    (folder / ".gitignore").write_text("ran.json\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True)
    (folder / "train.py").write_text(TRAIN + "# tuned\n")  # uncommitted: the patch is captured
    return folder


def _trained(world: World, through_server: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = _git_project(world.client if through_server else world.served.root)
    env = world.env("writer" if through_server else None)
    ran = subprocess.run(
        [sys.executable, "train.py", "ran.json"], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello out\n"
    assert "Traceback" not in ran.stderr
    done = json.loads((folder / "ran.json").read_text())
    with Vault.open(world.served.root) as vault:  # both runs live in the server's vault: read in-process
        return done, json.loads(json.dumps(vault.runs.export(done["id"]), default=str))


def test_start_run_through_the_server_records_what_a_local_run_records(world: World) -> None:
    """Code (commit, branch, dirty patch), environment, config files, seeds and stdout/stderr are
    captured on the client, as on a local vault; the run records the client's host and process."""
    local_done, local = _trained(world, through_server=False)
    done, through = _trained(world, through_server=True)
    assert through["code"]["commit"] is not None
    assert through["code"]["dirty"] is True
    assert through["code"]["patch"] == local["code"]["patch"]  # the same bytes: the same object
    assert through["environment"]["python"] == local["environment"]["python"]
    assert through["config"][0]["content"] == CONFIG
    assert through["stdout"] is not None
    assert (through["host"], through["pid"]) == (socket.gethostname(), done["pid"])
    assert (local["host"], local["pid"]) == (socket.gethostname(), local_done["pid"])
    assert through["cwd"] == str(world.client / "api-project")
    # The same summary (python, packages, OS, hardware); the full documents name their own folders.
    assert through["environment"] | {"sha256": None} == local["environment"] | {"sha256": None}
    for key in VOLATILE:
        local.pop(key)
        through.pop(key)
    assert through == local


@pytest.mark.parametrize(
    "bad",
    [
        {"host": ""},
        {"host": "a b"},
        {"host": "box\x1b[2J"},
        {"host": "h" * 257},
        {"host": 7},
        {"pid": 0},
        {"pid": -1},
        {"pid": 2**31},
        {"pid": "12"},
        {"pid": 1.5},
    ],
)
def test_create_refuses_a_bad_host_or_pid(world: World, bad: dict[str, object]) -> None:
    error_of(world.served.client("writer").post("/runs", json={"name": "bad", **bad}), 400, 2)


def test_create_records_the_clients_host_and_pid_or_no_pid(world: World) -> None:
    """The run's process is the client's; a client that does not say has no known process (never the
    server's own, which would keep the run looking alive as long as the server runs)."""
    w = world.served.client("writer")
    made = w.post("/runs", json={"name": "from-elsewhere", "host": "gpu-box-7", "pid": 4242}).json()
    anon = w.post("/runs", json={"name": "anonymous"}).json()
    with Vault.open(world.served.root) as vault:
        shown = vault.runs.export(made["id"])
        assert (shown["host"], shown["pid"]) == ("gpu-box-7", 4242)
        assert vault.runs.export(anon["id"])["pid"] is None


def test_resume_records_the_resuming_clients_host_and_pid(world: World) -> None:
    w = world.served.client("writer")
    made = w.post("/runs", json={"name": "resumable", "host": "gpu-box-7", "pid": 4242}).json()
    assert w.post(f"/runs/{made['id']}/end", json={"status": "failed"}).status_code == 200
    error_of(w.post(f"/runs/{made['id']}/resume", json={"pid": 0}), 400, 2)
    error_of(w.post(f"/runs/{made['id']}/resume", json={"host": "a b", "pid": 7}), 400, 2)
    assert w.post(f"/runs/{made['id']}/resume", json={"host": "gpu-box-8", "pid": 99}).status_code == 200
    with Vault.open(world.served.root) as vault:
        shown = vault.runs.export(made["id"])
        assert (shown["status"], shown["host"], shown["pid"]) == ("running", "gpu-box-8", 99)
    assert w.post(f"/runs/{made['id']}/end", json={"status": "failed"}).status_code == 200
    assert w.post(f"/runs/{made['id']}/resume").status_code == 200  # no body: no known process
    with Vault.open(world.served.root) as vault:
        assert vault.runs.export(made["id"])["pid"] is None


def test_a_pid_without_its_host_is_no_known_process(world: World) -> None:
    made = world.served.client("writer").post("/runs", json={"name": "pid-only", "pid": 4242}).json()
    with Vault.open(world.served.root) as vault:
        assert vault.runs.export(made["id"])["pid"] is None
