"""``labvault remote``, ``push`` and ``pull`` end to end, through the real executable."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from labvault.vault import Vault
from tests.corruption import corrupt_object
from tests.e2e.conftest import Cli
from tests.e2e.test_reproduce import trained  # noqa: F401  (the fixture)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _json(proc: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def _dataset(project: Path, cli: Cli, name: str = "raw", files: int = 3, salt: str = "") -> str:
    folder = project / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"f{i}.txt").write_text(f"{salt}{i}\n")
    return cli("data", "add", name, f"data/{name}", cwd=project).stdout.split()[0]


def test_push_pull_of_a_snapshot_and_a_model_between_two_folders(project: Path, cli: Cli, tmp_path: Path) -> None:
    cli("init")
    ref = _dataset(project, cli)
    assert ref == "data:raw@v1"
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_bytes(b"\x01" * 5000)
    cli("models", "register", "shop/ranker", "model")
    nas = tmp_path / "nas"
    cli("remote", "add", "nas", str(nas), "--default")
    listed = json.loads(cli("remote", "list", "--json").stdout)
    assert listed == [{"name": "nas", "kind": "folder", "url": str(nas), "default": True}]

    dry = _json(cli("push", "--dry-run", "--json", "data:raw", "shop/ranker@0.1.0"))
    assert dry["dry_run"]
    assert not (nas / ".labvault").exists()
    pushed = _json(cli("push", "--json", "data:raw", "shop/ranker@0.1.0"))
    assert [(r["ref"], r["action"]) for r in pushed["records"]] == [
        ("data:raw@v1", "new"),
        ("shop/ranker@0.1.0", "new"),
    ]
    assert pushed["objects"]["sent"] >= 5
    again = _json(cli("push", "--json", "data:raw", "shop/ranker@0.1.0"))
    assert again["objects"]["sent"] == 0
    assert {r["action"] for r in again["records"]} == {"present"}
    # The receiving vault audits the registration it received; aliases never travel.
    audit = cli("audit", "log", "--json", cwd=nas).stdout
    assert "shop/ranker@0.1.0" in audit
    assert "received_from" in audit
    cli("fsck", cwd=nas)

    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), cwd=other)
    pulled = _json(cli("pull", "--json", "data:raw@v1", "shop/ranker@0.1.0", cwd=other))
    assert {r["action"] for r in pulled["records"]} == {"new"}
    out = tmp_path / "served"
    cli("get", "shop/ranker@0.1.0", "-o", str(out), cwd=other)
    assert (out / "shop" / "ranker" / "0.1.0" / "w.bin").read_bytes() == b"\x01" * 5000
    cli("data", "checkout", "data:raw@v1", str(other / "raw"), cwd=other)
    assert (other / "raw" / "f2.txt").read_text() == "2\n"
    cli("fsck", cwd=other)


def test_conflict_names_both_and_rename_renumbers(project: Path, cli: Cli, tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    _dataset(other, cli, salt="theirs", files=2)
    cli("remote", "add", "nas", str(nas), cwd=other)
    cli("push", "data:raw@v1", cwd=other)

    cli("init")
    _dataset(project, cli, salt="mine")
    cli("remote", "add", "nas", str(nas))
    clash = cli("push", "data:raw@v1", expect=4)
    assert "data:raw@v1 differs" in clash.stderr
    assert clash.stderr.count("sha256:") == 2
    assert "--rename" in clash.stderr
    renamed = cli("push", "data:raw@v1", "--rename")
    assert "data:raw@v1 -> data:raw@v2" in renamed.stdout
    cli("push", "data:raw@v1", "--rename")  # the same content is now there: a no-op
    cli("fsck", cwd=nas)


def test_fresh_machine_pull_get_and_reproduce_a_model(
    project: Path,
    cli: Cli,
    trained: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The issue's whole path: machine A trains, snapshots, registers and pushes; a fresh clone with an
    empty vault pulls the lock's data and the model, serves it verified and reproduces it, rebuilt."""
    cli("models", "register", "fraud/detector", "--from", f"run:{trained}", "--artifact", "model.json")
    nas = tmp_path / "nas"
    cli("remote", "add", "origin", str(nas), "--default")
    cli("push")  # the lock's snapshots
    cli("push", "fraud/detector@0.1.0")  # the version, its run, the run's inputs
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "after training")
    served_a = tmp_path / "served-a"
    cli("get", "fraud/detector@0.1.0", "-o", str(served_a))

    fresh = tmp_path / "fresh"
    _git(tmp_path, "clone", "-q", str(project), str(fresh))
    _git(fresh, "config", "user.email", "t@example.com")
    _git(fresh, "config", "user.name", "t")
    cli("init", cwd=fresh)
    cli("remote", "add", "origin", str(nas), cwd=fresh)
    status = _json(cli("remote", "status", "--json", cwd=fresh))
    assert status["here_lacks"]["records"] == ["data:train@v1"]
    cli("pull", cwd=fresh)
    cli("data", "checkout", cwd=fresh)
    assert (fresh / "data" / "train.csv").read_bytes() == (project / "data" / "train.csv").read_bytes()
    pulled = _json(cli("pull", "fraud/detector@0.1.0", "--json", cwd=fresh))
    assert {(r["ref"], r["action"]) for r in pulled["records"]} >= {
        (f"run:{trained}", "new"),
        ("fraud/detector@0.1.0", "new"),
    }
    served = tmp_path / "served"
    cli("get", "fraud/detector@0.1.0", "-o", str(served), cwd=fresh)
    got = served / "fraud" / "detector" / "0.1.0"
    want = served_a / "fraud" / "detector" / "0.1.0"
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())
    for path in want.iterdir():
        assert (got / path.name).read_bytes() == path.read_bytes()
    (fresh / "configs").mkdir(exist_ok=True)  # the config is not in git: reproduce restores it from the run
    doc = _json(cli("reproduce", "fraud/detector@0.1.0", "--env", "rebuild", "--json", cwd=fresh, timeout=300))
    assert doc["verdict"] == "reproduced", doc
    assert doc["environment"]["mode"] == "rebuild"
    cli("fsck", cwd=fresh)
    assert _json(cli("remote", "status", "fraud/detector@0.1.0", "--json", cwd=fresh))["in_sync"]


def test_pull_resolves_the_lock_by_content(project: Path, cli: Cli, tmp_path: Path) -> None:
    """The puller already has its own data:raw@v1: the pulled one lands as v2, and the lock still checks out."""
    nas = tmp_path / "nas"
    _git(project, "init", "-q")
    cli("init")
    _dataset(project, cli, salt="A")
    cli("remote", "add", "nas", str(nas))
    cli("push")
    lock = (project / "labvault.lock").read_text()

    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    _dataset(other, cli, salt="B")  # its own data:raw@v1
    (other / "labvault.lock").write_text(lock)  # as a git pull of A's commit would bring
    cli("remote", "add", "nas", str(nas), cwd=other)
    pulled = _json(cli("pull", "--json", cwd=other))
    assert [(r["ref"], r["action"], r["as"]) for r in pulled["records"]] == [("data:raw@v1", "renamed", "data:raw@v2")]
    cli("data", "checkout", "--force", cwd=other)
    assert (other / "data" / "raw" / "f0.txt").read_text() == "A0\n"


def test_pull_checkout_restores_the_lock_in_one_step(project: Path, cli: Cli, tmp_path: Path) -> None:
    """`pull --checkout` is `pull` then `data checkout` in one command, as `dvc pull` is."""
    nas = tmp_path / "nas"
    cli("init")
    _dataset(project, cli, files=5)
    cli("remote", "add", "nas", str(nas))
    cli("push")
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(project / "labvault.lock", clone / "labvault.lock")  # what a git clone brings
    cli("init", cwd=clone)
    cli("remote", "add", "nas", str(nas), cwd=clone)
    refused = cli("pull", "--checkout", "--dry-run", cwd=clone, expect=2)
    assert refused.stderr.startswith("error: --checkout"), refused.stderr
    assert not (clone / "data").exists()
    out = _json(cli("pull", "--checkout", "--json", cwd=clone))
    assert [r["ref"] for r in out["records"]] == ["data:raw@v1"]
    assert [(c["ref"], c["written"]) for c in out["checkout"]] == [("data:raw@v1", 5)]
    assert [(clone / "data" / "raw" / f"f{i}.txt").read_text() for i in range(5)] == [f"{i}\n" for i in range(5)]
    (clone / "data" / "raw" / "f0.txt").write_text("mine\n")  # a local change is never overwritten
    kept = cli("pull", "--checkout", cwd=clone, expect=4)
    assert "labvault data checkout --force" in kept.stderr, kept.stderr
    assert (clone / "data" / "raw" / "f0.txt").read_text() == "mine\n"


def test_corrupt_object_on_the_remote_is_exit_5(project: Path, cli: Cli, tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    cli("init")
    (project / "big.bin").write_bytes(b"x" * 200_000)  # stored loose, not packed
    cli("data", "add", "big", "big.bin")
    cli("remote", "add", "nas", str(nas))
    cli("push", "data:big@v1")
    digest = Digest(hashlib.sha256(b"x" * 200_000).hexdigest())
    with Vault.open(nas) as remote:
        assert isinstance(remote.objects, LocalObjectStore)
        corrupt_object(remote.objects, digest, b"y" * 200_000)

    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), cwd=other)
    bad = cli("pull", "data:big@v1", cwd=other, expect=5)
    assert str(digest) in bad.stderr
    assert "corrupt" in bad.stderr
    assert "data:big" not in cli("data", "list", cwd=other).stdout
    cli("fsck", cwd=other)


def test_a_corrupt_packed_object_among_its_neighbours_is_exit_5(project: Path, cli: Cli, tmp_path: Path) -> None:
    """Small objects travel a pack span at a time: one bad record in the middle is refused, named."""
    nas = tmp_path / "nas"
    cli("init")
    _dataset(project, cli, "raw", files=40)
    cli("remote", "add", "nas", str(nas))
    cli("push", "data:raw@v1")
    digest = Digest(hashlib.sha256(b"17\n").hexdigest())
    with Vault.open(nas) as remote:
        assert isinstance(remote.objects, LocalObjectStore)
        assert remote.objects.is_packed(digest)
        corrupt_object(remote.objects, digest, b"71\n")

    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), cwd=other)
    bad = cli("pull", "data:raw@v1", cwd=other, expect=5)
    assert f"object {digest} on remote 'nas'" in bad.stderr
    assert "corrupt" in bad.stderr
    assert "data:raw" not in cli("data", "list", cwd=other).stdout
    cli("fsck", cwd=other)


@pytest.mark.parametrize(
    ("column", "value"), [("offset", "'x'"), ("size", "1.5"), ("pack", "'p'"), ("mtime", "'never'")]
)
def test_a_crafted_pack_index_row_on_the_remote_is_no_traceback(
    project: Path, cli: Cli, tmp_path: Path, column: str, value: str
) -> None:
    """An index row of another type than the schema's is a wrong row: repaired from the pack, or refused."""
    nas = tmp_path / "nas"
    cli("init")
    _dataset(project, cli, "raw", files=4)
    cli("remote", "add", "nas", str(nas))
    cli("push", "data:raw@v1")
    with sqlite3.connect(nas / ".labvault" / "objects" / "packs" / "index.sqlite") as db:
        db.execute(f"UPDATE objects SET {column} = {value}")

    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), cwd=other)
    out = cli("pull", "data:raw@v1", cwd=other, expect=None)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode in (0, 5), out.stderr
    if out.returncode == 0:
        cli("data", "checkout", "data:raw@v1", "--force", cwd=other)
        assert (other / "data" / "raw" / "f0.txt").exists()
    cli("fsck", cwd=other)


def test_hostile_records_on_the_remote_are_refused(project: Path, cli: Cli, tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    cli("init")
    _dataset(project, cli)
    cli("remote", "add", "nas", str(nas))
    cli("push", "data:raw@v1")
    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), cwd=other)
    db = sqlite3.connect(nas / ".labvault" / "meta.db")
    # A size no column can hold, then a storage path that climbs out of the project.
    db.execute("UPDATE data_snapshots SET total_bytes = 99999999999999999999")
    db.commit()
    bad = cli("pull", "data:raw@v1", cwd=other, expect=5)
    assert "malformed" in bad.stderr or "cannot be read" in bad.stderr
    db.execute("UPDATE data_snapshots SET total_bytes = 6, storage_uri = '../../outside'")
    db.commit()
    bad = cli("pull", "data:raw@v1", cwd=other, expect=5)
    assert "relative path" in bad.stderr
    db.close()
    assert "data:raw" not in cli("data", "list", cwd=other).stdout
    assert not (tmp_path / "outside").exists()


def test_a_crafted_tree_on_the_remote_is_refused_and_writes_nothing(project: Path, cli: Cli, tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    cli("init", cwd=nas)
    # A tree whose entry climbs out, stored under its true hash, and a snapshot row pointing at it.
    crafted = json.dumps(
        {"format": "labvault.tree/1", "entries": [{"name": "..", "sha256": "0" * 64, "size": 1, "type": "file"}]},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    with Vault.open(nas) as remote:
        digest = remote.objects.put_bytes(crafted)
    db = sqlite3.connect(nas / ".labvault" / "meta.db")
    db.execute(
        "INSERT INTO data_snapshots VALUES ('evil', 1, ?, 'dir', 'data/evil', 1, 1, 0, NULL, NULL,"
        " '2026-01-01 00:00:00.000000', 'x', '', NULL, NULL, '[]')",
        (digest.hex,),
    )
    db.commit()
    db.close()
    cli("init")
    cli("remote", "add", "nas", str(nas))
    bad = cli("pull", "data:evil@v1", expect=5)
    assert "malformed" in bad.stderr
    assert "evil" not in cli("data", "list").stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("push", "--remote", "nope", "data:raw@v1"), 3, "no remote named 'nope'"),
        (("push", "data:nothing@v1"), 3, "has no data:nothing@v1"),
        (("pull", "data:nothing@v1"), 3, "has no data:nothing@v1"),
        (("remote", "add", "x", "s3://user:secret@bucket/p"), 2, "credentials"),
        (("remote", "add", "x", "https://u:secret@lab.example.com"), 2, "credentials"),
        (("remote", "add", "x", "--db", "postgresql://u:secret@h/db", "--objects", "s3://b"), 2, "credentials"),
        (("remote", "add", "x", "--db", "postgresql://h/db"), 2, "--objects"),
        (("remote", "add", "bad/name", "/tmp/x"), 2, "remote name"),
        (("remote", "remove", "nope"), 3, "no remote named"),
        (("push", "--jobs", "0", "data:raw@v1"), 2, "--jobs"),
    ],
)
def test_bad_input(project: Path, cli: Cli, tmp_path: Path, args: tuple[str, ...], code: int, words: str) -> None:
    cli("init")
    _dataset(project, cli)
    cli("remote", "add", "nas", str(tmp_path / "nas"))
    cli("push", "data:raw@v1")
    bad = cli(*args, expect=code)
    assert words in bad.stderr
    assert "secret" not in bad.stderr
    assert bad.stderr.startswith("error: ")
    assert "\nhint: " in bad.stderr


def test_an_unreachable_remote_is_exit_7(project: Path, cli: Cli, tmp_path: Path) -> None:
    cli("init")
    cli("remote", "add", "gone", str(tmp_path / "not-mounted"))
    bad = cli("pull", "data:raw@v1", expect=7)
    assert len(bad.stderr.splitlines()) == 2
    assert "not-mounted" in bad.stderr


def _ci_steps() -> list[str]:
    """The shell lines of the CI recipe's ``run: |`` blocks in docs/ci.md."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ci.md").read_text()
    yaml_text = doc.split("```yaml\n")[-1].split("```")[0]
    lines, inside = [], False
    for line in yaml_text.splitlines():
        if line.strip() == "run: |":
            inside = True
            continue
        if inside and line.startswith(" " * 10):
            lines.append(line.strip())
        else:
            inside = False
    return lines


def test_the_ci_recipe_reproduces_the_model_behind_prod(
    project: Path,
    cli: Cli,
    trained: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    import os
    import sys

    cli("models", "register", "fraud/detector", "--from", f"run:{trained}", "--artifact", "model.json")
    nas = tmp_path / "nas"
    cli("remote", "add", "origin", str(nas))
    cli("push")
    cli("push", "fraud/detector@0.1.0")
    # Aliases never travel: prod moves in the shared vault, under its policies.
    cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod", cwd=nas)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "trained")

    runner = tmp_path / "runner"
    _git(tmp_path, "clone", "-q", str(project), str(runner))
    _git(runner, "config", "user.email", "ci@example.com")
    _git(runner, "config", "user.name", "ci")
    steps = _ci_steps()
    assert steps[0] == "labvault init"
    assert any(s.startswith("labvault reproduce") for s in steps)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "LABVAULT_REMOTE": str(nas),
        "MODEL": "fraud/detector",
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    script = "set -euo pipefail\n" + "\n".join(steps) + "\n"
    proc = subprocess.run(["bash", "-c", script], cwd=runner, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (runner / "version.txt").read_text().strip() == "fraud/detector@0.1.0"
    assert json.loads((runner / "reproduce.json").read_text())["verdict"] == "reproduced"


_BIG_BYTES = b"\x02" * (1 << 20 | 3000)  # above the pack limit: a file of its own, easy to lose


def test_checkout_and_get_fetch_what_is_missing_from_the_default_remote(
    project: Path, cli: Cli, tmp_path: Path
) -> None:
    cli("init")
    (project / "data" / "raw").mkdir(parents=True)
    (project / "data" / "raw" / "big.bin").write_bytes(_BIG_BYTES[::-1] + b"d")
    _dataset(project, cli, files=4)
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_bytes(_BIG_BYTES)
    cli("models", "register", "shop/ranker", "model")
    nas = tmp_path / "nas"
    cli("remote", "add", "nas", str(nas), "--default")
    cli("push", "shop/ranker@0.1.0")  # the lock's data:raw@v1 is not pushed yet
    cli("push")

    other = tmp_path / "clone"
    other.mkdir()
    (other / "labvault.lock").write_bytes((project / "labvault.lock").read_bytes())
    cli("init", cwd=other)
    # No remote: one line naming what is missing and how to add a default remote.
    failed = cli("data", "checkout", cwd=other, expect=None)
    assert failed.returncode == 3, failed.stderr
    assert "error: this vault lacks data:raw@v1 (labvault.lock), and has no remote" in failed.stderr
    assert "labvault remote add NAME PATH --default" in failed.stderr
    assert "Traceback" not in failed.stderr
    failed = cli("get", "shop/ranker@0.1.0", "-o", str(tmp_path / "x"), cwd=other, expect=None)
    assert failed.returncode == 3
    assert "--default" in failed.stderr
    assert not (tmp_path / "x").exists()

    cli("remote", "add", "nas", str(nas), "--default", cwd=other)
    cli("data", "checkout", cwd=other)  # the lock's snapshot and its objects come from nas
    assert sorted(p.name for p in (other / "data" / "raw").iterdir()) == [
        "big.bin",
        "f0.txt",
        "f1.txt",
        "f2.txt",
        "f3.txt",
    ]
    assert (other / "data" / "raw" / "f3.txt").read_text() == "3\n"
    out = tmp_path / "served"
    cli("get", "shop/ranker@0.1.0", "-o", str(out), cwd=other)
    assert (out / "shop" / "ranker" / "0.1.0" / "w.bin").read_bytes() == _BIG_BYTES

    # Objects lost here (records kept) are fetched again, verified.
    store = LocalObjectStore(other / ".labvault")
    blob = Digest(hashlib.sha256(_BIG_BYTES).hexdigest())
    (other / ".labvault" / "objects" / "sha256" / blob.hex[:2] / blob.hex[2:]).unlink()
    assert not store.has(blob)
    out2 = tmp_path / "served2"
    cli("get", "shop/ranker@0.1.0", "-o", str(out2), cwd=other)
    assert (out2 / "shop" / "ranker" / "0.1.0" / "w.bin").read_bytes() == _BIG_BYTES
    data_blob = hashlib.sha256(_BIG_BYTES[::-1] + b"d").hexdigest()
    (other / ".labvault" / "objects" / "sha256" / data_blob[:2] / data_blob[2:]).unlink()
    cli("data", "checkout", "data:raw@v1", str(tmp_path / "raw2"), cwd=other)
    assert (tmp_path / "raw2" / "big.bin").read_bytes() == _BIG_BYTES[::-1] + b"d"
    cli("fsck", cwd=other)


def test_remote_status_says_what_each_side_lacks(project: Path, cli: Cli, tmp_path: Path) -> None:
    cli("init")
    (project / "data" / "raw").mkdir(parents=True)
    (project / "data" / "raw" / "big.bin").write_bytes(b"\x03" * (1 << 20 | 6000))
    _dataset(project, cli, files=3)
    nas = tmp_path / "nas"
    cli("remote", "add", "nas", str(nas), "--default")
    fresh = _json(cli("remote", "status", "--json"))
    assert fresh["remote_has_vault"] is False
    assert fresh["remote_lacks"]["records"] == ["data:raw@v1"]
    assert not fresh["in_sync"]
    cli("push")
    synced = _json(cli("remote", "status", "nas", "--json"))
    assert synced["in_sync"], synced
    assert synced["remote_lacks"] == {"records": [], "objects": 0}
    assert "in sync" in cli("remote", "status").stdout

    # A second snapshot here only, and a dataset pushed from another vault: each side lacks one.
    _dataset(project, cli, name="extra", files=2, salt="x")
    other = tmp_path / "other"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), cwd=other)
    _dataset(other, cli, name="theirs", files=2, salt="t")
    cli("push", "data:theirs@v1", cwd=other)
    both = _json(cli("remote", "status", "data:extra@v1", "data:theirs@v1", "--json"))
    assert both["remote_lacks"]["records"] == ["data:extra@v1"]
    assert both["here_lacks"]["records"] == ["data:theirs@v1"]
    text = cli("remote", "status", "nas", "data:extra@v1", "data:theirs@v1").stdout
    assert "the remote lacks: data:extra@v1" in text
    assert "this vault lacks: data:theirs@v1" in text

    # Objects lost on the remote (its records kept) are counted.
    digest = hashlib.sha256(b"\x03" * (1 << 20 | 6000)).hexdigest()
    (nas / ".labvault" / "objects" / "sha256" / digest[:2] / digest[2:]).unlink()
    lost = _json(cli("remote", "status", "nas", "data:raw@v1", "--json"))
    assert lost["remote_lacks"] == {"records": [], "objects": 1}

    bad = cli("remote", "status", "nope", expect=3)
    assert "no remote named 'nope'" in bad.stderr
    gone = cli("remote", "status", "data:nothing@v1", expect=3)
    assert "neither this vault nor remote 'nas' has data:nothing@v1" in gone.stderr
    cli("remote", "add", "away", str(tmp_path / "unmounted" / "proj"))
    cli("remote", "status", "away", expect=7)


def test_push_shows_a_progress_bar_of_objects_and_bytes_on_a_terminal(project: Path, cli: Cli, tmp_path: Path) -> None:
    import os
    import pty

    from tests.e2e.conftest import LABVAULT

    cli("init")
    (project / "data" / "raw").mkdir(parents=True)
    (project / "data" / "raw" / "big.bin").write_bytes(b"\x05" * (2 << 20))
    _dataset(project, cli, files=600)
    cli("remote", "add", "nas", str(tmp_path / "nas"), "--default")
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [LABVAULT, "push", "--jobs", "2"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=follower, timeout=120
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    assert "pushing" in text
    assert "602/602" in text  # 600 files, the big one and the tree
    assert "objects, 2.1 MiB" in text  # and the bytes sent


def test_data_checkout_from_python_fetches_from_the_default_remote(project: Path, cli: Cli, tmp_path: Path) -> None:
    from labvault.vault import Vault

    cli("init")
    _dataset(project, cli, files=3)
    nas = tmp_path / "nas"
    cli("remote", "add", "nas", str(nas), "--default")
    cli("push")
    other = tmp_path / "clone"
    other.mkdir()
    cli("init", cwd=other)
    cli("remote", "add", "nas", str(nas), "--default", cwd=other)
    with Vault.open(other) as vault:
        results = vault.data.checkout("data:raw@v1", other / "restored")
    assert [r.ref for r in results] == ["data:raw@v1"]
    assert sorted(p.name for p in (other / "restored").iterdir()) == ["f0.txt", "f1.txt", "f2.txt"]
    assert (other / "restored" / "f1.txt").read_bytes() == (project / "data" / "raw" / "f1.txt").read_bytes()
    cli("fsck", cwd=other)
