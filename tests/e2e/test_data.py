"""labvault data, through the installed executable: the workflow, JSON output, and bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from tests.corruption import flip_byte

from .conftest import Cli


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
