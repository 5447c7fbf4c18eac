"""A labvault server as a remote: ``labvault remote add team http://...``, ``push`` and ``pull`` through
the API, with the real executable against the real server (SQLite, and PostgreSQL + moto S3)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labvault.errors import IntegrityError
from labvault.refs import Digest
from tests.server.conftest import LABVAULT, Served, clean_env, error_of, free_port

TRAIN = """\
import json, os
import labvault as lv
files = sorted(os.listdir("data/{name}"))
with open("model.json", "w") as f:
    json.dump({{"files": files, "seed": os.environ["LABVAULT_SEED"]}}, f)
with lv.start_run() as run:
    run.log_param("lr", 0.1)
    for step in range(5):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    run.log_metric("odd", float("nan"), step=5)
"""


def _env(home: Path, token: str | None) -> dict[str, str]:
    env = clean_env()
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "cfg"), XDG_CACHE_HOME=str(home / "cache"))
    env["LABVAULT_USER"] = "alice@example.com"
    if token is not None:
        env["LABVAULT_TOKEN"] = token
    return env


def lv(
    cwd: Path, *args: str, token: str | None = None, expect: int | None = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real executable in ``cwd`` (a local vault) with ``LABVAULT_TOKEN`` for the server remote."""
    proc = subprocess.run(
        [LABVAULT, *args],
        cwd=cwd,
        env=_env(cwd.parent, token),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if expect is not None:
        assert proc.returncode == expect, f"labvault {args} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
    return proc


def _doc(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def _actions(doc: dict[str, Any]) -> dict[str, str]:
    return {r["ref"]: r["action"] for r in doc["records"]}


def _project(path: Path, url: str) -> Path:
    path.mkdir(parents=True)
    lv(path, "init")
    lv(path, "remote", "add", "team", url, "--default")
    return path


def _dataset(project: Path, name: str, files: int = 3, salt: str = "", size: int = 0) -> str:
    folder = project / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"f{i}.txt").write_text(f"{salt}{i}\n" + "x" * size)
    return lv(project, "data", "add", name, f"data/{name}").stdout.split()[0]


def _trained(project: Path, name: str) -> str:
    """A run that read data:NAME, logged params and metrics (one NaN) and wrote model.json."""
    (project / "train.py").write_text(TRAIN.format(name=name))
    out = lv(
        project,
        "run",
        "--input",
        f"data:{name}",
        "--output",
        "model.json",
        "--seed",
        "7",
        "--",
        sys.executable,
        "train.py",
    )
    found = re.search(r"run:([0-9a-f]{6,32}) finished", out.stderr + out.stdout)
    assert found, out.stderr
    return found.group(1)


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_then_pull_a_snapshot_a_run_and_a_model_byte_for_byte(served: Served, tmp_path: Path) -> None:
    url = served.urls[0]
    mine = _project(tmp_path / "a" / "proj", url)
    _dataset(mine, "rt", files=4, size=3000)
    run_id = _trained(mine, "rt")
    lv(mine, "models", "register", "rt/ranker", "--from", f"run:{run_id}", "--artifact", "model.json")
    refs = ("data:rt@v1", f"run:{run_id}", "rt/ranker@0.1.0")

    dry = _doc(lv(mine, "push", "--dry-run", "--json", *refs, token=served.tokens["writer"]))
    assert dry["dry_run"]
    assert set(_actions(dry).values()) == {"new"}
    pushed = _doc(lv(mine, "push", "--json", *refs, token=served.tokens["writer"]))
    assert _actions(pushed) == {"data:rt@v1": "new", f"run:{run_id}": "new", "rt/ranker@0.1.0": "new"}
    assert pushed["url"] == url
    assert pushed["objects"]["sent"] == dry["objects"]["sent"] >= 6
    again = _doc(lv(mine, "push", "--json", *refs, token=served.tokens["writer"]))
    assert set(_actions(again).values()) == {"present"}
    assert again["objects"]["sent"] == 0
    # The token never lands in the project's files.
    config = (mine / ".labvault" / "config.json").read_text()
    assert served.tokens["writer"] not in config
    assert json.loads(config)["remotes"]["team"] == {"kind": "server", "url": url}

    # The server audits the registration it received, by the token's user; no alias travelled.
    events = served.client("reader").get("/audit").json()
    received = [e for e in events if e.get("subject") == "rt/ranker@0.1.0"]
    assert received, events
    assert received[0]["actor"] == "writer-user"
    assert received[0]["details"]["registered_by"] == "alice@example.com"

    fresh = _project(tmp_path / "b" / "proj", url)
    pulled = _doc(lv(fresh, "pull", "--json", *refs, token=served.tokens["reader"]))
    assert _actions(pulled) == {"data:rt@v1": "new", f"run:{run_id}": "new", "rt/ranker@0.1.0": "new"}
    assert pulled["direction"] == "pull"
    lv(fresh, "data", "checkout", "data:rt@v1", "restored")
    assert _tree_bytes(fresh / "restored") == _tree_bytes(mine / "data" / "rt")
    lv(fresh, "get", "rt/ranker@0.1.0", "-o", "served")
    lv(mine, "get", "rt/ranker@0.1.0", "-o", "served")
    assert _tree_bytes(fresh / "served") == _tree_bytes(mine / "served")
    shown = [_doc(lv(p, "runs", "show", f"run:{run_id}", "--json")) for p in (mine, fresh)]
    assert shown[0] == shown[1]
    assert shown[1]["params"] == {"lr": 0.1}
    exported = [lv(p, "runs", "export", f"run:{run_id}").stdout for p in (mine, fresh)]
    assert exported[0] == exported[1]
    lv(fresh, "fsck")
    quiet = _doc(lv(fresh, "pull", "--json", *refs, token=served.tokens["reader"]))
    assert set(_actions(quiet).values()) == {"present"}
    assert quiet["objects"]["sent"] == 0


def test_the_lock_s_snapshots_travel_with_no_ref(served: Served, tmp_path: Path) -> None:
    url = served.urls[0]
    mine = _project(tmp_path / "a" / "proj", url)
    _dataset(mine, "locked", files=2, salt="lock")
    pushed = _doc(lv(mine, "push", "--json", token=served.tokens["writer"]))
    assert _actions(pushed) == {"data:locked@v1": "new"}
    fresh = _project(tmp_path / "b" / "proj", url)
    (fresh / "labvault.lock").write_bytes((mine / "labvault.lock").read_bytes())
    pulled = _doc(lv(fresh, "pull", "--json", token=served.tokens["reader"]))
    assert _actions(pulled) == {"data:locked@v1": "new"}
    lv(fresh, "data", "checkout")
    assert _tree_bytes(fresh / "data" / "locked") == _tree_bytes(mine / "data" / "locked")


def _uploads(served: Served) -> int:
    """Object uploads the server has answered: PUTs and batches."""
    log = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
    return sum(
        ('"PUT"' in line and "/api/v1/objects/" in line) or ('"POST"' in line and '"/api/v1/objects/batch"' in line)
        for line in log.splitlines()
    )


def _batches(served: Served) -> int:
    """Batch uploads the server has answered (stored all of their objects, or none)."""
    log = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
    return sum('"POST"' in line and '"/api/v1/objects/batch"' in line for line in log.splitlines())


def test_a_push_killed_midway_leaves_the_server_consistent_and_a_rerun_completes(
    served: Served, tmp_path: Path
) -> None:
    url = served.urls[0]
    mine = _project(tmp_path / "a" / "proj", url)
    # Files just under the 1 MiB a batch carries per object: 15 of them fill a 16 MiB batch (the
    # first batch also carries the folder's tree), so the push takes several batches to kill between.
    files = 30 if served.backend == "team" else 45
    _dataset(mine, "killed", files=files, salt="k", size=(1 << 20) - 16)
    before = _batches(served)
    proc = subprocess.Popen(
        [LABVAULT, "push", "data:killed@v1", "--jobs", "1"],
        cwd=mine,
        env=_env(mine.parent, served.tokens["writer"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while _batches(served) == before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _batches(served) > before, "the kill did not land mid-push"
    # Objects first, records last: the snapshot is not on the server; whole batches only are stored.
    dry = _doc(lv(mine, "push", "--dry-run", "--json", "data:killed@v1", token=served.tokens["writer"]))
    assert _actions(dry) == {"data:killed@v1": "new"}
    assert dry["objects"]["present"] in (16, 31), dry["objects"]
    rerun = _doc(lv(mine, "push", "--json", "data:killed@v1", token=served.tokens["writer"], timeout=600))
    assert _actions(rerun) == {"data:killed@v1": "new"}
    assert rerun["objects"]["sent"] == dry["objects"]["sent"] == files + 1 - dry["objects"]["present"]
    fresh = _project(tmp_path / "b" / "proj", url)
    lv(fresh, "pull", "data:killed@v1", token=served.tokens["reader"], timeout=600)
    lv(fresh, "data", "checkout", "data:killed@v1", "back")
    assert _tree_bytes(fresh / "back") == _tree_bytes(mine / "data" / "killed")


def test_a_reader_token_cannot_push(served: Served, tmp_path: Path) -> None:
    mine = _project(tmp_path / "proj", served.urls[0])
    _dataset(mine, "readonly", files=1)
    refused = lv(mine, "push", "data:readonly@v1", token=served.tokens["reader"], expect=8)
    assert refused.stderr.startswith("error: ")
    assert "writer" in refused.stderr
    assert served.tokens["reader"] not in refused.stderr
    bad = lv(mine, "push", "data:readonly@v1", token="lvt_not_a_token", expect=8)
    assert "token rejected" in bad.stderr
    dry = _doc(lv(mine, "push", "--dry-run", "--json", "data:readonly@v1", token=served.tokens["writer"]))
    assert _actions(dry) == {"data:readonly@v1": "new"}  # nothing was written by the refused pushes


def test_an_unreachable_server_is_exit_7(tmp_path: Path) -> None:
    mine = _project(tmp_path / "proj", f"http://127.0.0.1:{free_port()}")
    _dataset(mine, "raw", files=1)
    for args in (("push", "data:raw@v1"), ("pull", "data:raw@v1")):
        bad = lv(mine, *args, token="lvt_x", expect=7)
        assert "cannot reach the server" in bad.stderr
        assert len(bad.stderr.splitlines()) == 2


def test_different_content_under_an_existing_number_is_a_conflict(served: Served, tmp_path: Path) -> None:
    url = served.urls[0]
    theirs = _project(tmp_path / "a" / "proj", url)
    _dataset(theirs, "clash", files=2, salt="theirs")
    lv(theirs, "push", "data:clash@v1", token=served.tokens["writer"])
    mine = _project(tmp_path / "b" / "proj", url)
    _dataset(mine, "clash", files=2, salt="mine")
    before = _uploads(served)
    clash = lv(mine, "push", "data:clash@v1", token=served.tokens["writer"], expect=4)
    assert "data:clash@v1 differs" in clash.stderr
    assert clash.stderr.count("sha256:") == 2
    assert "--rename" in clash.stderr
    assert _uploads(served) == before  # refused before any object was sent
    renamed = lv(mine, "push", "data:clash@v1", "--rename", token=served.tokens["writer"])
    assert "data:clash@v1 -> data:clash@v2" in renamed.stdout
    again = _doc(lv(mine, "push", "--json", "data:clash@v1", "--rename", token=served.tokens["writer"]))
    assert again["records"] == [
        {"ref": "data:clash@v1", "kind": "snapshot", "action": "present", "as": "data:clash@v2"}
    ]
    # A pull resolves snapshots by content: theirs lands here under the next free number.
    pulled = _doc(lv(mine, "pull", "--json", "data:clash@v1", token=served.tokens["reader"]))
    assert pulled["records"][0]["as"] == "data:clash@v2"


@pytest.mark.parametrize(
    ("location", "code", "words"),
    [
        ("https://user:secret@lab.example.com", 2, "credentials"),
        ("https://lab.example.com/?token=secret", 2, "query"),
        ("https://lab.example.com:99999", 2, "port"),
    ],
)
def test_bad_server_urls_are_refused(tmp_path: Path, location: str, code: int, words: str) -> None:
    mine = tmp_path / "proj"
    mine.mkdir()
    lv(mine, "init")
    bad = lv(mine, "remote", "add", "team", location, expect=code)
    assert words in bad.stderr
    assert "secret" not in bad.stderr
    listed = _doc(lv(mine, "remote", "add", "ok", "https://lab.example.com/", "--json"))
    assert listed == {"name": "ok", "kind": "server", "url": "https://lab.example.com", "default": False}


def test_a_big_object_goes_up_in_one_upload_session_and_a_cut_push_resumes(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over PIECES_OVER an object goes up in pieces of one upload session, written once on the server
    (no chunk is stored as an object, nothing is composed); on the team vault's object storage, which
    takes no sessions, as chunks composed there. A push cut midway sends only the rest when rerun."""
    from labvault.client import remote, remote_objects
    from labvault.client.transport import Transport
    from labvault.errors import ExternalError
    from labvault.vault import Vault

    piece = 16 << 10
    monkeypatch.setattr(remote_objects, "PIECES_OVER", 64 << 10)
    monkeypatch.setattr(remote_objects, "PIECE", piece)
    monkeypatch.setattr(remote_objects, "CHUNK", piece)
    monkeypatch.setattr(remote, "INLINE_RECORDS", 100)  # the records go up as an object too
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the session's id is kept
    batches: list[dict[str, Any]] = []
    real_batch = remote._batch
    monkeypatch.setattr(remote, "_batch", lambda t, wire: batches.append(real_batch(t, wire)) or batches[-1])
    monkeypatch.setenv("LABVAULT_TOKEN", served.tokens["writer"])
    mine = _project(tmp_path / "proj", served.urls[0])
    big = os.urandom((200 << 10) + 5)
    (mine / "data" / "big").mkdir(parents=True)
    (mine / "data" / "big" / "blob.bin").write_bytes(big)
    lv(mine, "data", "add", "big", "data/big")
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    chunks = {hashlib.sha256(big[i : i + piece]).hexdigest() for i in range(0, len(big), piece)}
    sessions = served.backend != "team"
    sent: list[str] = []  # the pieces (session) or chunks (compose) that went up
    real_request = Transport.request

    def counted(self: Transport, method: str, path: str, **kw: Any) -> Any:
        name = path.removeprefix("/objects/").removeprefix("sha256:")
        if method == "PUT" and (path.startswith("/objects/uploads/") or name in chunks):
            sent.append(path)
            if len(sent) == 5 and cut:
                raise ExternalError("connection lost")
        return real_request(self, method, path, **kw)

    monkeypatch.setattr(Transport, "request", counted)
    with Vault.open(mine) as vault:
        spec = vault.remotes.get("team")
        cut = True
        with pytest.raises(ExternalError):
            remote.push(vault, spec, ["data:big@v1"], jobs=2)
        assert len(sent) == 5
        cut, sent[:] = False, []
        result = remote.push(vault, spec, ["data:big@v1"], jobs=2)
        assert len(sent) == len(chunks) - 4  # what the server already held is not sent again
        assert result.objects_sent >= 1
        assert [m.action for m in result.records] == ["new"]
        assert list(batches[-1]) == ["batch"]
        again = remote.push(vault, spec, ["data:big@v1"])
        assert again.objects_sent == 0
    reader = served.client("reader")
    got = reader.get(f"/objects/{digest}")
    assert got.status_code == 200
    assert got.content == big
    stored_chunks = [c for c in chunks if reader.head(f"/objects/sha256:{c}").status_code == 200]
    assert (stored_chunks == []) == sessions, stored_chunks
    log = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
    hexd = digest.removeprefix("sha256:")
    assert (f"/api/v1/objects/{hexd}/compose" in log) != sessions
    assert f"/api/v1/objects/{hexd}/uploads" in log  # asked first; object storage answers {"upload": null}


def test_a_corrupt_big_object_is_refused_before_anything_is_stored(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its bytes are hashed here as they go up: exit 5, naming this vault, and the session is dropped."""
    from labvault.client import remote, remote_objects
    from labvault.vault import Vault
    from tests.corruption import flip_byte

    monkeypatch.setattr(remote_objects, "PIECES_OVER", 64 << 10)
    monkeypatch.setattr(remote_objects, "PIECE", 16 << 10)
    monkeypatch.setattr(remote_objects, "CHUNK", 16 << 10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LABVAULT_TOKEN", served.tokens["writer"])
    mine = _project(tmp_path / "proj", served.urls[0])
    big = os.urandom(100 << 10)
    (mine / "data" / "rot").mkdir(parents=True)
    (mine / "data" / "rot" / "blob.bin").write_bytes(big)
    lv(mine, "data", "add", "rot", "data/rot")
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    with Vault.open(mine) as vault:
        flip_byte(vault.objects, Digest(digest.removeprefix("sha256:")))  # type: ignore[arg-type]
        with pytest.raises(IntegrityError, match="corrupt") as caught:
            remote.push(vault, vault.remotes.get("team"), ["data:rot@v1"])
    assert "this vault" in str(caught.value)
    assert served.client("reader").head(f"/objects/{digest}").status_code == 404
    kept = tmp_path / "cache" / "labvault" / "uploads"
    assert not kept.is_dir() or not list(kept.iterdir())  # no session left to resume


def test_the_server_refuses_crafted_or_incomplete_records(served: Served) -> None:
    writer = served.client("writer")
    row = {
        "name": "crafted",
        "version": 1,
        "content_hash": "ab" * 32,
        "kind": "dir",
        "storage_uri": "data/crafted",
        "file_count": 1,
        "total_bytes": 1,
        "tabular": False,
        "record_count": None,
        "schema_hash": None,
        "created_at": {"$t": "2026-01-01T00:00:00+00:00"},
        "created_by": "x",
        "message": "",
        "source_url": None,
        "source_version": None,
        "notes": "[]",
    }
    record = {"kind": "snapshot", "row": row, "refs": [["ab" * 32, "tree"]], "parts": {}}
    missing = writer.post("/transfer/records", json={"records": [record]})
    assert "not on the server" in str(error_of(missing, 409, 4)["error"])
    for bad in (
        {**row, "storage_uri": "../../etc"},
        {**row, "evil": 1},
        {**row, "name": "a/b"},
        {**row, "created_at": "yesterday"},
    ):
        refused = writer.post("/transfer/records", json={"records": [{**record, "row": bad}]})
        assert "malformed" in str(error_of(refused, 400, 2)["error"])
    reader = served.client("reader").post("/transfer/records", json={"records": [record]})
    error_of(reader, 403, 8)


def test_records_from_a_server_are_decoded_and_checked() -> None:
    from labvault.client.remote_wire import decode_records

    for raw in ([{"kind": "alias"}], [{"kind": "snapshot", "row": []}], "no", [{"kind": "run", "row": {"id": "x"}}]):
        with pytest.raises(IntegrityError):
            decode_records(raw, where="remote 'team'")


def test_the_saved_login_s_token_serves_a_remote_of_that_url(served: Served, tmp_path: Path) -> None:
    from labvault.client.settings import save_login

    mine = _project(tmp_path / "proj", served.urls[0])
    _dataset(mine, "login", files=1, salt="login")
    save_login(served.urls[0], served.tokens["writer"], {"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    pushed = _doc(lv(mine, "push", "--json", "data:login@v1"))  # no LABVAULT_TOKEN: the saved one
    assert _actions(pushed) == {"data:login@v1": "new"}
    assert served.tokens["writer"] not in (mine / ".labvault" / "config.json").read_text()
    env = {**_env(tmp_path, None), "LABVAULT_URI": served.urls[0]}
    through = subprocess.run(
        [LABVAULT, "push", "data:login@v1"], cwd=mine, env=env, capture_output=True, text=True, check=False
    )
    assert through.returncode == 2, through.stderr
    assert through.stderr.startswith("error: ")
