"""labvault data, through the installed executable: the workflow, JSON output, and bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from tests.corruption import flip_byte
from tests.e2e.teamvault import TEAM, TEAM_FULL, team_or_local_cli

from .conftest import Cli


@pytest.fixture
def cli(request: pytest.FixtureRequest, cli: Cli) -> Cli:
    """The local vault, or (for the tests marked TEAM) also a team vault on PostgreSQL + S3."""
    return team_or_local_cli(request, cli)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.fixture
def data(cli: Cli, project: Path) -> Path:
    cli("init")
    return _tree(project / "data", {"t.csv": "a,b\n1,x\n2,y\n", "sub/n.txt": "note\n", "bad.csv": 'a\n"open\n'})


@TEAM
def test_workflow(cli: Cli, project: Path, data: Path) -> None:
    out = cli("data", "add", "raw", "data", "-m", "first").stdout.split()
    assert out[0] == "data:raw@v1"
    assert out[1].startswith("sha256:")
    again = cli("data", "add", "raw", "data")
    assert again.stdout.split()[0] == "data:raw@v1"
    assert "no change since data:raw@v1" in again.stderr
    assert "data  data:raw@v1  clean" in cli("data", "status").stdout

    (data / "sub" / "n.txt").write_text("edited\n")
    (data / "new.txt").write_text("n")
    status = json.loads(cli("data", "status", "--json").stdout)  # exit 0 with changes too
    assert status == [
        {
            "path": "data", "ref": "data:raw@v1", "clean": False, "missing": False, "added": ["new.txt"],
            "removed": [], "modified": ["sub/n.txt"], "changing": [],
        }
    ]  # fmt: skip
    assert json.loads(cli("data", "status", "raw", "data", "--json").stdout)[0]["path"] == "data"
    refused = cli("data", "checkout", "data:raw@v1", expect=4)
    assert "data/new.txt" in refused.stderr
    assert "data/sub/n.txt" in refused.stderr
    assert "--force" in refused.stderr
    cli("data", "add", "raw", "data", "-m", "second")
    cli("data", "checkout", "raw@v1")
    assert (data / "sub" / "n.txt").read_text() == "note\n"
    assert not (data / "new.txt").exists()
    cli("data", "checkout")  # labvault.lock now says v1: nothing to do
    assert json.loads(cli("data", "checkout", "--json").stdout)[0]["written"] == 0

    listing = json.loads(cli("data", "list", "--json").stdout)
    assert [(d["ref"], d["versions"]) for d in listing] == [("data:raw@v2", 2)]
    log = json.loads(cli("data", "log", "raw", "--json").stdout)
    assert [v["id"] for v in log] == ["raw@v2", "raw@v1"]
    shown = json.loads(cli("data", "show", "data:raw@v1", "--json").stdout)
    assert shown["record_count"] == 2
    assert shown["notes"][0].startswith("bad.csv: tabular stats skipped")
    ls = json.loads(cli("data", "ls", "data:raw@v1", "sub", "--json").stdout)
    assert ls == [{"path": "sub/n.txt", "type": "file", "size": 5, "sha256": ls[0]["sha256"]}]
    cli("data", "manifest", "data:raw@v1", "-o", "data_manifest.json")
    exported = json.loads((project / "data_manifest.json").read_text())
    assert exported["content_hash"] == shown["content_hash"]
    assert (project / "data_manifest.json").read_text() == json.dumps(exported, indent=2, sort_keys=True) + "\n"
    diff = json.loads(cli("data", "diff", "data:raw@v1", "data:raw@v2", "--json").stdout)
    assert diff["added"] == ["new.txt"]
    assert diff["modified"] == ["sub/n.txt"]
    text_diff = cli("data", "diff", "raw@v1", "raw@v2").stdout
    assert "1 added, 0 removed, 1 modified" in text_diff
    assert text_diff.splitlines()[-1] == "verdict: no drift (no numeric column of a tabular file changed)"
    assert cli("data", "diff", "raw@v1", "raw@v1").stdout.splitlines()[-1] == "verdict: no change"
    # human tables
    assert "data:raw@v2" in cli("data", "list").stdout
    assert "t.csv" in cli("data", "show", "raw").stdout
    assert "sub/" in cli("data", "ls", "raw").stdout
    assert "data:raw@v1" in cli("data", "log", "raw").stdout
    assert cli("data", "status", "-q").stdout == ""
    assert "Usage" in cli("data", "status", "--help").stdout
    cli("fsck")


@TEAM_FULL
def test_import_a_local_folder(cli: Cli, project: Path, tmp_path: Path) -> None:
    cli("init")
    _tree(tmp_path / "outside", {"x.jsonl": '{"k": 1}\n'})
    doc = json.loads(cli("data", "import", "ext", str(tmp_path / "outside"), "--json").stdout)
    assert doc["source_url"] == doc["storage_uri"] == (tmp_path / "outside").resolve().as_uri()  # file://
    assert doc["ref"] == "data:ext@v1"
    assert doc["created"] is True
    assert doc["record_count"] == 1


def test_status_path_imports_nothing_heavy(cli: Cli, project: Path, data: Path) -> None:
    cli("data", "add", "raw", "data")
    code = (
        "import sys; from labvault.cli.entry import main; rc = main(['data', 'status']); "
        "print(rc, sorted(m for m in ('sqlalchemy', 'typer', 'pydantic', 'rich', 'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("0 []")


BAD_INPUT = [
    (("data", "add", "bad/name", "data"), 2, "invalid dataset name"),
    (("data", "add", "ok", "missing"), 2, "no such file"),
    (("data", "add", "ok", ".labvault"), 2, "inside the vault"),
    (("data", "show", "data:nope"), 3, "no dataset named"),
    (("data", "show", "data:raw@v7"), 3, "does not exist"),
    (("data", "show", "data:raw@7"), 2, "invalid data version"),
    (("data", "log", "nope"), 3, "no dataset"),
    (("data", "ls", "raw", "nope"), 3, "no folder"),
    (("data", "status", "nope"), 3, "not in labvault.lock"),
    (("data", "checkout", "raw", "data/../.labvault"), 2, "inside the vault"),
    (("data", "diff", "raw", "data:nope"), 3, "no dataset"),
    (("data", "import", "x", "nosuchproto://h/p"), 2, "cannot read"),
    (("data", "add"), 2, ""),
    (("data", "add", "raw"), 2, ""),
    (("data", "add", "raw", "data", "-m"), 2, ""),
    (("data", "add", "raw", "data", "--bogus"), 2, ""),
    (("data", "add", "raw", "data", "extra"), 2, ""),
]


def test_add_options_on_the_lean_path(cli: Cli, project: Path, data: Path) -> None:
    """``data add`` is parsed without typer; every spelling of its options means the same."""
    first = json.loads(cli("data", "add", "raw", "data", "--message=first one", "--json").stdout)
    assert first["message"] == "first one"
    assert first["created"] is True
    (data / "more.txt").write_text("more\n")
    quiet = cli("-q", "data", "add", "raw", "data", "-m", "second")
    assert (quiet.stdout, quiet.stderr) == ("", "")
    (data / "more.txt").write_text("changed\n")
    proc = cli("data", "add", "--message", "third", "raw", "data", "-v")
    assert proc.stdout.startswith("data:raw@v3")
    assert "pinned in labvault.lock" in proc.stderr
    shown = json.loads(cli("data", "log", "raw", "--json").stdout)
    assert [v["message"] for v in shown] == ["third", "second", "first one"]
    assert cli("data", "add", "raw", "data").stderr.strip() == "no change since data:raw@v3"
    assert "Snapshot PATH" in cli("data", "add", "--help").stdout


@TEAM_FULL
def test_bad_input(cli: Cli, data: Path) -> None:
    """One line on stderr, the conventions' exit code, no traceback (the cli fixture checks it)."""
    cli("data", "add", "raw", "data")
    for args, code, text in BAD_INPUT:
        proc = cli(*args, expect=code)
        assert text in proc.stderr, (args, proc.stderr)
        if text:
            assert proc.stderr.startswith("error: ")
            assert len(proc.stderr.splitlines()) <= 2


def test_socket_is_refused_and_nothing_is_written(cli: Cli, project: Path, data: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(data / "s.sock"))
    try:
        proc = cli("data", "add", "raw", "data", expect=2)
    finally:
        sock.close()
    assert "socket" in proc.stderr
    assert not (project / "labvault.lock").exists()
    assert cli("data", "list", "--json").stdout.strip() == "[]"


def test_status_outside_a_vault(cli: Cli, tmp_path: Path) -> None:
    proc = cli("data", "status", cwd=tmp_path, expect=3)
    assert "not inside a labvault vault" in proc.stderr
    assert "labvault init" in proc.stderr


def test_corrupt_object_during_checkout(cli: Cli, project: Path, data: Path) -> None:
    cli("data", "add", "raw", "data")
    shown = json.loads(cli("data", "show", "raw", "--json").stdout)
    sha = next(f["sha256"] for f in shown["files"] if f["path"] == "sub/n.txt").split(":")[1]
    flip_byte(LocalObjectStore(project / ".labvault"), Digest(sha))
    proc = cli("data", "checkout", "raw", "restored", expect=5)
    assert "restored/sub/n.txt" in proc.stderr
    assert sha in proc.stderr
    assert "labvault fsck" in proc.stderr
    assert not (project / "restored").exists()  # a new folder appears whole or not at all
    assert [p.name for p in project.iterdir() if ".labvault-" in p.name] == []


_REWRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
with open(sys.argv[1], "rb") as f:
    byte = f.read(1)
print("ready", flush=True)
while True:  # the same byte again and again: the content never changes, its mtime always does
    os.pwrite(fd, byte, 0)
    time.sleep(0.0005)
"""


@pytest.fixture
def rewriter() -> Iterator[Callable[[Path], None]]:
    """Start a process that keeps rewriting a file's first byte (same value) until the test ends."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path) -> None:
        proc = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        procs.append(proc)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_large_file_being_written_during_add_and_status(
    cli: Cli, project: Path, rewriter: Callable[[Path], None]
) -> None:
    """A file above 1 MiB written to while labvault reads it: `add` exits 4 (or, between writes,
    records the right bytes), `status` says "changing" (or, between writes, clean): never a wrong
    record. (Below 1 MiB a read is shorter than the clock tick that stamps mtime, so a concurrent
    writer cannot be seen reliably from outside; tests/services/test_snapshots_integrity.py injects it.)"""
    size = 8 * 1024 * 1024
    cli("init")
    data = project / "data"
    data.mkdir()
    (data / "log.bin").write_bytes(b"L" * size)
    (data / "other.txt").write_text("o\n")
    cli("data", "add", "raw", "data")
    rewriter(data / "log.bin")
    outcomes = []
    for _ in range(10):
        proc = cli("data", "status", "--json")
        (status,) = json.loads(proc.stdout)
        assert status["modified"] == [], status  # the bytes never change
        outcomes.append(status["changing"])
        if status["changing"]:
            break
    assert ["log.bin"] in outcomes
    for _ in range(10):
        proc = cli("data", "add", "raw2", "data", expect=None)
        assert proc.returncode in (0, 4), proc.stderr
        if proc.returncode == 4:
            break
        (entry,) = [
            f for f in json.loads(cli("data", "show", "raw2", "--json").stdout)["files"] if f["path"] == "log.bin"
        ]
        assert entry["size"] == size
    assert proc.returncode == 4
    assert proc.stderr.startswith("error: ")
    assert "log.bin changed while it was being read" in proc.stderr
    assert "\nhint: " in proc.stderr
    assert cli("fsck").returncode == 0


def test_fsck_reports_a_manifest_size_that_is_not_its_objects(cli: Cli, project: Path) -> None:
    from labvault.storage.meta.repos.object_refs import add_refs
    from labvault.storage.objects.tree import TreeEntry, put_tree
    from labvault.vault import Vault

    cli("init")
    vault = Vault.open(project / ".labvault")
    try:
        with vault.objects.batch():
            blob = vault.objects.put_bytes(b"twelve bytes")
            root = put_tree(vault.objects, [TreeEntry("t.csv", "file", blob, 13)])
        with vault.meta.transaction() as conn:
            add_refs(conn, "data:raw@v1", [(root, "tree")])
    finally:
        vault.close()
    proc = cli("fsck", expect=1)
    assert "t.csv is listed with 13 bytes, but its object" in proc.stdout + proc.stderr


def _git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return done.stdout


def test_add_keeps_the_path_out_of_git(cli: Cli, project: Path, data: Path) -> None:
    _git(project, "init", "-q", "-b", "main")
    (project / "weird [1].csv").write_text("a\n1\n")
    added = cli("data", "add", "raw", "data")
    assert "added /data to .gitignore" in added.stderr
    assert (project / ".gitignore").read_text().splitlines() == [".labvault/", "/data"]
    assert "data/" not in _git(project, "status", "--porcelain", "--untracked-files=all")
    again = cli("data", "add", "raw", "data")  # idempotent: one line, nothing said
    assert ".gitignore" not in again.stderr
    assert (project / ".gitignore").read_text().count("/data") == 1
    doc = json.loads(cli("data", "add", "odd", "weird [1].csv", "--json").stdout)
    assert doc["gitignore"] == {"line": "/weird \\[1].csv", "added": True, "tracked": []}
    assert "weird" not in _git(project, "status", "--porcelain", "--untracked-files=all")
    skipped = project / "skipped.csv"
    skipped.write_text("a\n2\n")
    assert ".gitignore" not in cli("data", "add", "skipped", "skipped.csv", "--no-gitignore").stderr
    assert "/skipped.csv" not in (project / ".gitignore").read_text()
    skipped.write_text("a\n3\n")
    typer_path = cli("data", "add", "skipped", "skipped.csv", "--no-gitignore", "-mv2")  # -mMSG: the typer parser
    assert "data:skipped@v2" in typer_path.stdout
    assert "/skipped.csv" not in (project / ".gitignore").read_text()
    skipped.write_text("a\n4\n")
    cli("data", "add", "skipped", "skipped.csv", "-mv3")
    assert (project / ".gitignore").read_text().splitlines()[-1] == "/skipped.csv"


def test_add_warns_when_git_tracks_the_path(cli: Cli, project: Path, data: Path) -> None:
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "data")
    _git(project, "commit", "-qm", "data in git")
    proc = cli("data", "add", "raw", "data")
    assert "warning: git tracks data (3 files), so every commit still stores the data" in proc.stderr
    assert "hint: `git rm -r --cached data` stops tracking it" in proc.stderr
    single = cli("data", "add", "t", "data/t.csv", "--json")
    assert "hint: `git rm --cached data/t.csv`" in single.stderr
    assert json.loads(single.stdout)["gitignore"]["tracked"] == ["data/t.csv"]
    _git(project, "rm", "-rq", "--cached", "data")
    assert "warning" not in cli("data", "add", "raw", "data").stderr
    assert "?? data" not in _git(project, "status", "--porcelain", "--untracked-files=all")  # ignored now
