"""The foundation through the real ``labvault`` executable: init, finding the vault, object
plumbing, fsck, gc, exit codes, --json shapes, --quiet/--verbose, version and help text."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pytest
import typer

from labvault.cli.app import app
from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from tests.contracts.test_object_store import colliding_pair
from tests.corruption import corrupt_object, flip_byte
from tests.e2e.conftest import LABVAULT, Cli

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def ref_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_lines(stderr: str) -> list[str]:
    """stderr of a failed command: exactly one error line, optionally one hint line."""
    lines = stderr.splitlines()
    assert lines, "no error message"
    assert lines[0].startswith("error: "), stderr
    assert len(lines) <= 2, stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), stderr
    return lines


@pytest.fixture(scope="session")
def template_vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `labvault init` per session; a vault folder is relocatable, so tests copy it."""
    root = tmp_path_factory.mktemp("template")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "-q", "init"], cwd=root, env=env, check=True)
    return root / ".labvault"


@pytest.fixture
def inited(project: Path, template_vault: Path) -> Path:
    shutil.copytree(template_vault, project / ".labvault")
    return project


# -- init and finding the vault ---------------------------------------------------------------


def test_init_creates_the_vault_and_ignores_it_in_git_once(cli: Cli, project: Path) -> None:
    (project / ".gitignore").write_text("*.pyc")  # no trailing newline
    out = cli("init").stdout
    assert "Initialised" in out
    vault = project / ".labvault"
    for part in ("config.json", "meta.db", "objects/sha256", "tmp", "quarantine", "locks"):
        assert (vault / part).exists(), part
    assert json.loads((vault / "config.json").read_text())["format_version"] == 2
    assert (project / ".gitignore").read_text() == "*.pyc\n.labvault/\n"

    again = cli("init")
    assert "already a vault" in again.stdout
    assert (project / ".gitignore").read_text() == "*.pyc\n.labvault/\n"
    doc = json.loads(cli("init", "--json").stdout)
    assert doc == {"created": False, "path": str(vault), "root": str(project)}


def test_init_with_a_path(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    doc = json.loads(cli("init", str(target), "--json").stdout)
    assert doc["created"] is True
    assert Path(doc["path"]) == target / ".labvault"
    assert (target / ".gitignore").read_text() == ".labvault/\n"


def test_outside_a_vault_is_one_line_with_the_init_hint(cli: Cli, tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    for args in (("fsck",), ("gc",), ("object", "ls"), ("object", "cat", "deadbeef")):
        proc = cli(*args, expect=3, cwd=nowhere)
        lines = error_lines(proc.stderr)
        assert "not inside a labvault vault" in lines[0]
        assert "labvault init" in lines[1]
        assert proc.stdout == ""


def test_commands_find_the_vault_by_walking_up(cli: Cli, inited: Path) -> None:
    deep = inited / "src" / "pkg" / "deeper"
    deep.mkdir(parents=True)
    (deep / "f.txt").write_bytes(b"from below")
    assert cli("object", "put", "f.txt", cwd=deep).stdout.strip() == ref_of(b"from below")
    assert cli("object", "cat", ref_of(b"from below"), cwd=inited).stdout == "from below"


def test_labvault_dir_overrides_the_search(cli: Cli, inited: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_bytes(b"via LABVAULT_DIR")
    env = {"LABVAULT_DIR": str(inited / ".labvault")}
    cli("object", "put", "x.txt", cwd=other, env=env)
    listed = json.loads(cli("object", "ls", "--json", cwd=inited).stdout)
    assert [o["ref"] for o in listed] == [ref_of(b"via LABVAULT_DIR")]
    proc = cli("object", "ls", cwd=inited, env={"LABVAULT_DIR": str(other)}, expect=3)
    assert "LABVAULT_DIR" in error_lines(proc.stderr)[0]


def test_init_honours_labvault_dir(cli: Cli, tmp_path: Path) -> None:
    vault_dir = tmp_path / "custom" / ".labvault"
    cli("init", env={"LABVAULT_DIR": str(vault_dir)})
    assert (vault_dir / "config.json").is_file()


def test_concurrent_inits_all_succeed_and_leave_one_healthy_vault(tmp_path: Path) -> None:
    root = tmp_path / "race"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    procs = [
        subprocess.Popen(
            [LABVAULT, "init"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * 8, results
    assert all("Traceback" not in err for _, _, err in results)
    created = [out for _, out, _ in results if "Initialised" in out]
    assert len(created) == 1, results
    assert (root / ".gitignore").read_text() == ".labvault/\n"
    fsck = subprocess.run([LABVAULT, "fsck", "--json"], cwd=root, env=env, capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stderr
    assert json.loads(fsck.stdout)["clean"] is True


# -- object plumbing --------------------------------------------------------------------------


def test_object_put_cat_ls(cli: Cli, inited: Path) -> None:
    a_bytes, b_bytes = b"\x00\x01binary\xff", b"text\n"
    (inited / "a.bin").write_bytes(a_bytes)
    (inited / "b.txt").write_bytes(b_bytes)
    a_ref, b_ref = ref_of(a_bytes), ref_of(b_bytes)
    assert cli("object", "put", "a.bin").stdout == a_ref + "\n"
    both = cli("object", "put", "a.bin", "b.txt").stdout.splitlines()
    assert both == [f"{a_ref}  a.bin", f"{b_ref}  b.txt"]

    put = json.loads(cli("object", "put", "a.bin", "b.txt", "--json").stdout)
    assert put == [
        {"path": "a.bin", "id": a_ref[7:], "ref": a_ref, "size": 9},
        {"path": "b.txt", "id": b_ref[7:], "ref": b_ref, "size": 5},
    ]
    listed = json.loads(cli("object", "ls", "--json").stdout)
    assert sorted(o["ref"] for o in listed) == sorted(p["ref"] for p in put)
    for o in listed:
        assert set(o) == {"id", "ref", "size", "mtime"}
        assert o["ref"] == "sha256:" + o["id"]
        assert ISO_Z.match(o["mtime"]), o["mtime"]
    table = cli("object", "ls").stdout
    for p in put:
        assert p["ref"] in table  # full hashes, never truncated, even when not on a terminal

    raw = subprocess.run(
        [LABVAULT, "object", "cat", put[0]["id"][:8]], cwd=inited, capture_output=True, check=True
    ).stdout
    assert raw == b"\x00\x01binary\xff"
    assert cli("object", "cat", f"sha256:{put[1]['id'][:12]}").stdout == "text\n"


def test_object_cat_unknown_ambiguous_and_corrupt(cli: Cli, inited: Path) -> None:
    proc = cli("object", "cat", "sha256:0123456789abcdef", expect=3)
    assert "no object matches" in error_lines(proc.stderr)[0]

    a, b = colliding_pair()
    (inited / "a").write_bytes(a)
    (inited / "b").write_bytes(b)
    cli("object", "put", "a", "b")
    prefix = hashlib.sha256(a).hexdigest()[:8]
    proc = cli("object", "cat", prefix, expect=2)
    lines = error_lines(proc.stderr)
    assert "ambiguous" in lines[0]
    assert ref_of(a) in lines[0]
    assert ref_of(b) in lines[0]

    digest = hashlib.sha256(a).hexdigest()
    flip_byte(LocalObjectStore(inited / ".labvault"), Digest(digest))
    proc = cli("object", "cat", ref_of(a), expect=5)
    assert "corrupt" in error_lines(proc.stderr)[0]
    assert "fsck" in proc.stderr
    proc = cli("object", "cat", ref_of(a), expect=5)  # quarantined: never served again, still corrupt
    assert "quarantined to" in proc.stderr


def test_object_put_bad_input(cli: Cli, inited: Path) -> None:
    (inited / "folder").mkdir()
    for args in (("object", "put", "missing.txt"), ("object", "put", "folder")):
        proc = cli(*args, expect=2)
        error_lines(proc.stderr)
    cli("object", "cat", "abc", expect=2)  # a prefix shorter than 8 digits
    cli("object", "cat", "sha256:not-hex!", expect=2)


# -- fsck and gc ------------------------------------------------------------------------------


def test_fsck_json_and_exit_1_on_corruption(cli: Cli, inited: Path) -> None:
    (inited / "f").write_bytes(b"fsck me")
    ref = cli("object", "put", "f").stdout.strip()
    clean = json.loads(cli("fsck", "--json").stdout)
    assert clean == {
        "clean": True,
        "checked": 1,
        "bytes_checked": 7,
        "corrupt": [],
        "missing": [],
        "quarantined": [],
        "problems": [],
        "stale_temp_files": {"count": 0, "bytes": 0},
        "quarantine": {"count": 0, "bytes": 0},
    }
    human = cli("fsck")
    assert "no problems" in human.stderr
    digest = ref[7:]
    corrupt_object(LocalObjectStore(inited / ".labvault"), Digest(digest), b"rotten!")
    proc = cli("fsck", "--json", expect=1)
    doc = json.loads(proc.stdout)
    assert doc["clean"] is False
    assert doc["corrupt"] == [{"id": digest, "ref": ref}]
    assert doc["quarantined"] == [ref]
    assert error_lines(proc.stderr)[0].startswith("error: fsck found 1 corrupt")
    cli("fsck")  # quarantined and unreferenced: clean now


def test_gc_dry_run_grace_and_json(cli: Cli, inited: Path) -> None:
    (inited / "f").write_bytes(b"garbage")
    ref = cli("object", "put", "f").stdout.strip()
    young = json.loads(cli("gc", "--json").stdout)  # default grace: 14 days
    assert young == {
        "dry_run": False,
        "deleted": [],
        "bytes_freed": 0,
        "kept_referenced": 0,
        "kept_young": 1,
        "temp_files_removed": 0,
        "pack_bytes_reclaimed": 0,
        "quarantine_removed": {"count": 0, "bytes": 0},
    }
    dry = json.loads(cli("gc", "--dry-run", "--grace", "0", "--json").stdout)
    assert dry["dry_run"] is True
    assert dry["deleted"] == [ref]
    assert dry["bytes_freed"] == 7
    assert cli("object", "cat", ref).stdout == "garbage"
    assert "would delete 1 objects" in cli("gc", "-n", "--grace", "0").stdout
    verbose = cli("gc", "--grace", "0s", "--verbose").stdout
    assert f"deleted {ref}" in verbose
    assert "deleted 1 objects" in verbose
    cli("object", "cat", ref, expect=3)
    proc = cli("gc", "--grace", "fortnight", expect=2)
    assert "invalid duration" in error_lines(proc.stderr)[0]


# -- conventions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("nonsense",),
        ("object", "cat"),
        ("object", "frobnicate"),
        ("init", "--bogus"),
        ("gc", "--grace"),
        ("fsck", "extra-arg"),
    ],
)
def test_bad_arguments_exit_2(cli: Cli, inited: Path, args: tuple[str, ...]) -> None:
    proc = cli(*args, expect=2)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == 2  # the cause, and the usage line as the hint


def test_quiet_and_verbose(cli: Cli, inited: Path) -> None:
    (inited / "q").write_bytes(b"quiet")
    assert cli("--quiet", "object", "put", "q").stdout == ""
    assert cli("object", "put", "q", "-q").stdout == ""
    quiet_fsck = cli("fsck", "--quiet")
    assert quiet_fsck.stdout == quiet_fsck.stderr == ""
    failed = cli("-q", "object", "cat", "sha256:0123456789abcdef", expect=3)  # errors still show
    assert failed.stderr.startswith("error: ")
    assert cli("-v", "fsck").returncode == 0


def test_version(cli: Cli, tmp_path: Path) -> None:
    expected = dist_version("labvault")
    assert cli("version", cwd=tmp_path).stdout == f"labvault {expected}\n"
    assert json.loads(cli("version", "--json", cwd=tmp_path).stdout) == {"version": expected}


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command below ``command`` (typer may vendor its own click, so no isinstance checks)."""
    found = [(path, command)]
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            found += _walk(sub, (*path, name))
    return found


def test_every_command_and_option_has_help() -> None:
    commands = _walk(typer.main.get_command(app))
    names = {" ".join(p) for p, _ in commands}
    assert {"init", "version", "fsck", "gc", "object", "object put", "object cat", "object ls"} <= names
    for path, command in commands:
        where = " ".join(("labvault", *path))
        assert (command.help or "").strip(), f"`{where}` has no help text"
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"`{where}` {param.name} has no help text"


def test_help_runs_for_every_command(cli: Cli, tmp_path: Path) -> None:
    for path, _ in _walk(typer.main.get_command(app)):
        proc = cli(*path, "--help", cwd=tmp_path)
        assert "Usage: labvault" in proc.stdout
    top = cli("--help", cwd=tmp_path).stdout
    assert "Exit codes:" in top
    bare = cli(cwd=tmp_path, expect=0)  # no arguments: the help text, on stdout
    assert bare.stdout.startswith("Usage: labvault")


def test_fsck_reports_missing_objects_with_their_owners(cli: Cli, inited: Path) -> None:
    from labvault.storage.meta.repos.object_refs import add_refs
    from labvault.vault import Vault

    ghosts = [hashlib.sha256(b"ghost %d" % i).hexdigest() for i in range(3)]
    with Vault.open(inited) as vault, vault.meta.transaction() as conn:
        from labvault.refs import Digest

        add_refs(conn, "data:lost@v1", [(Digest(h), "blob") for h in ghosts])
        add_refs(conn, "run:abcdef123456", [(Digest(ghosts[0]), "blob")])
    proc = cli("fsck", "--json", expect=1)
    doc = json.loads(proc.stdout)
    assert doc["clean"] is False
    assert doc["missing"] == [
        {
            "id": h,
            "ref": f"sha256:{h}",
            "referenced_by": ["data:lost@v1", "run:abcdef123456"][: 2 if h == ghosts[0] else 1],
        }
        for h in sorted(ghosts)
    ]
    human = cli("fsck", expect=1).stdout
    assert f"missing  sha256:{ghosts[0]} (referenced by data:lost@v1, run:abcdef123456)" in human
