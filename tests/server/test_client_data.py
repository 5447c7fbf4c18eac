"""Data and objects through a server: the real ``labvault`` executable with ``LABVAULT_URI`` and a token,
from a folder with no vault, against the served SQLite and team (PostgreSQL + S3) vaults.

The same data commands run against a local vault and through the server must print the same thing
(times and the acting user masked); a second checkout downloads nothing; an interrupted chunked
upload resumes; roles, tokens and reachability map to exits 8 and 7; server-only commands exit 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from labvault.client.objects import HttpObjectStore
from labvault.client.settings import ServerTarget
from labvault.client.transport import Transport
from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from tests.e2e.conftest import LABVAULT
from tests.server.conftest import Served, clean_env, error_of, free_port

_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?Z?)?")


def client_env(home: Path, url: str | None = None, token: str | None = None, **extra: str) -> dict[str, str]:
    """A user's environment: its own HOME and XDG folders, and the server (if any) it works through."""
    env = clean_env()
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        LABVAULT_USER="writer-user",
        **extra,
    )
    if url is not None:
        env["LABVAULT_URI"] = url
    if token is not None:
        env["LABVAULT_TOKEN"] = token
    return env


def run(
    cwd: Path, env: dict[str, str], *args: str, expect: int | None = 0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [LABVAULT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False, input=stdin
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if expect is not None:
        assert proc.returncode == expect, f"labvault {args} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
    return proc


def make_data(folder: Path) -> None:
    (folder / "data" / "sub").mkdir(parents=True)
    (folder / "data" / "sub" / "t.csv").write_text("a,b\n1,x\n2,y\n3,z\n")
    (folder / "data" / "notes.txt").write_text("hello\n")
    (folder / "data" / "blob.bin").write_bytes(random.Random(7).randbytes(3000))
    (folder / "model.txt").write_text("a single file\n")


def writer(served: Served, home: Path) -> dict[str, str]:
    return client_env(home, served.urls[0], served.tokens["writer"])


def _masked(text: str) -> str:
    return _TIME.sub("TIME", text)


def _session(folder: Path, env: dict[str, str], name: str) -> list[str]:
    """The data workflow's outputs, in order (stdout and stderr, times masked)."""
    outs: list[str] = []

    def step(*args: str) -> None:
        proc = run(folder, env, *args)
        outs.append(f"$ {' '.join(args)}\n{_masked(proc.stdout)}{_masked(proc.stderr)}")

    step("data", "add", name, "data", "-m", "first")
    step("data", "add", name, "data", "-m", "again")  # no change
    step("data", "add", f"{name}-one", "model.txt")
    step("data", "show", name)
    step("data", "show", name, "--json")
    step("data", "log", name)
    step("data", "ls", name, "sub")
    step("data", "status")
    (folder / "data" / "notes.txt").write_text("changed\n")
    (folder / "data" / "new.txt").write_text("new\n")
    step("data", "status")
    step("data", "status", "--json")
    step("data", "add", name, "data", "-m", "second")
    step("data", "diff", f"{name}@v1", f"{name}@v2")
    for path in ("data/notes.txt", "data/new.txt", "data/sub/t.csv", "model.txt"):
        (folder / path).unlink()
    step("data", "status")
    step("data", "checkout")
    step("data", "checkout", f"{name}@v1", "restored")
    step("data", "status")
    step("data", "manifest", name, "-o", "-")
    lines = [line for line in run(folder, env, "data", "list").stdout.splitlines() if line.startswith(name + " ")]
    outs.append(_masked("\n".join(lines)))
    return outs


def test_data_commands_print_the_same_locally_and_through_the_server(served: Served, tmp_path: Path) -> None:
    name = f"ds-{secrets.token_hex(4)}"
    local, remote = tmp_path / "local", tmp_path / "remote"
    for folder in (local, remote):
        folder.mkdir()
        make_data(folder)
    local_env = client_env(tmp_path / "home-local")
    run(local, local_env, "init")
    through = writer(served, tmp_path / "home-remote")
    assert not (remote / ".labvault").exists()

    expected = _session(local, local_env, name)
    got = _session(remote, through, name)
    # The lock files pin the same content under the same references.
    assert json.loads((local / "labvault.lock").read_text()) == json.loads((remote / "labvault.lock").read_text())
    for a, b in zip(expected, got, strict=True):
        assert a == b
    assert (remote / "restored" / "notes.txt").read_text() == "hello\n"
    assert (remote / "model.txt").read_text() == "a single file\n"


def _object_gets(served: Served) -> int:
    """Object downloads the server answered: single GETs and batches."""
    log = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
    return sum(
        1
        for line in log.splitlines()
        if ('"GET"' in line and '"/api/v1/objects/' in line) or '"/api/v1/objects/batch/get"' in line
    )


def test_a_second_checkout_downloads_nothing(served: Served, tmp_path: Path) -> None:
    name = f"co-{secrets.token_hex(4)}"
    adder, user = tmp_path / "adder", tmp_path / "user"
    adder.mkdir()
    make_data(adder)
    run(adder, writer(served, tmp_path / "home-a"), "data", "add", name, "data")
    user.mkdir()
    env = writer(served, tmp_path / "home-b")
    before = _object_gets(served)
    run(user, env, "data", "checkout", name, "data")
    first = _object_gets(served) - before
    assert first >= 1  # the trees, and the three files in one batch
    for f in (user / "data").rglob("*"):
        if f.is_file():
            f.unlink()
    before = _object_gets(served)
    out = run(user, env, "data", "checkout", name, "data").stdout
    assert "3 written" in out
    assert _object_gets(served) == before  # every object came from the verified local cache
    assert (user / "data" / "notes.txt").read_text() == "hello\n"

    # A cached object that no longer matches its name is never served: it is fetched again.
    cache = tmp_path / "home-b" / ".cache" / "labvault" / "objects"
    digest = run(user, env, "data", "show", name, "--json").stdout
    notes = next(f["sha256"] for f in json.loads(digest)["files"] if f["path"] == "notes.txt")
    hexd = notes.removeprefix("sha256:")
    (cache / hexd[:2] / hexd[2:]).write_text("tampered\n")
    (user / "data" / "notes.txt").unlink()
    run(user, env, "data", "checkout", name, "data")
    assert (user / "data" / "notes.txt").read_text() == "hello\n"


def test_a_cache_entry_that_does_not_match_its_name_is_fetched_again(served: Served, tmp_path: Path) -> None:
    # (An interrupted upload resuming: tests/server/test_upload_sessions.py.)
    target = ServerTarget(served.urls[0], served.tokens["writer"])
    with Transport(target) as transport:
        other = HttpObjectStore(transport, cache_dir=tmp_path / "cache2")
        small = other.put_bytes(b"small object")
        other.cache.put(small.hex, b"small object")
        os.truncate(other.cache.path / small.hex[:2] / small.hex[2:], 3)
        assert other.get_bytes(small) == b"small object"
        assert other.downloads == 1
        with pytest.raises(NotFound, match="not stored"):
            other.get_bytes(Digest("0" * 63 + "1"))


def test_a_download_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/version"):
            return httpx.Response(200, json={"api": "1", "labvault": "test"})
        return httpx.Response(200, content=b"not what was asked for")

    transport = Transport(ServerTarget("http://server.invalid", "t"))
    transport._client = httpx.Client(base_url="http://server.invalid/api/v1", transport=httpx.MockTransport(answer))
    store = HttpObjectStore(transport, cache_dir=tmp_path / "cache")
    digest = Digest(hashlib.sha256(b"the real bytes").hexdigest())
    with pytest.raises(IntegrityError) as caught:
        store.get_bytes(digest)
    assert caught.value.exit_code == 5
    assert store.cache.usage() == (0, 0)  # nothing unverified was kept


def test_a_reader_cannot_add_data(served: Served, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    make_data(folder)
    env = client_env(tmp_path / "home", served.urls[0], served.tokens["reader"])
    proc = run(folder, env, "data", "add", "nope", "data", expect=8)
    assert "writer role" in proc.stderr
    assert "is a reader" in proc.stderr
    assert not (folder / "labvault.lock").exists()
    run(folder, env, "data", "list")  # reading is allowed


@pytest.mark.parametrize("token", ["lv_not-a-real-token", None])
def test_a_bad_or_missing_token_is_exit_8(served: Served, tmp_path: Path, token: str | None) -> None:
    env = client_env(tmp_path / "home", served.urls[0], token)
    proc = run(tmp_path, env, "data", "list", expect=8)
    assert "token rejected" in proc.stderr


def test_an_unreachable_server_is_exit_7(tmp_path: Path) -> None:
    env = client_env(tmp_path / "home", f"http://127.0.0.1:{free_port()}", "lv_x")
    proc = run(tmp_path, env, "data", "list", expect=7)
    assert "cannot reach" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("fsck",),
        ("gc",),
        ("init",),
        ("server", "token", "list"),
        ("server", "token", "create", "eve", "--role", "reader"),
        ("config", "set", "objects.cache_size", "5GiB"),
        ("data", "import", "x", "https://example.com/x.csv"),
    ],
)
def test_server_only_commands_say_so(served: Served, tmp_path: Path, args: tuple[str, ...]) -> None:
    env = writer(served, tmp_path / "home")
    proc = run(tmp_path, env, *args, expect=2)
    assert "server's machine" in proc.stderr
    assert not (tmp_path / ".labvault").exists()


def test_object_put_and_cat_through_the_server(served: Served, tmp_path: Path) -> None:
    env = writer(served, tmp_path / "home")
    data = random.Random(3).randbytes(5000)
    (tmp_path / "o.bin").write_bytes(data)
    digest = run(tmp_path, env, "object", "put", "o.bin").stdout.strip()
    assert digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    cat = subprocess.run([LABVAULT, "object", "cat", digest], cwd=tmp_path, env=env, capture_output=True, check=True)
    assert cat.stdout == data
    run(tmp_path, env, "object", "cat", digest, "-o", "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert "server's machine" in run(tmp_path, env, "object", "ls", expect=2).stderr
    run(tmp_path, env, "object", "cat", digest[:20], "-o", "prefixed.bin")  # the server resolves the prefix
    assert (tmp_path / "prefixed.bin").read_bytes() == data


def test_the_snapshot_route_checks_the_kind_and_path_a_client_sends(served: Served) -> None:
    w = served.client("writer")
    a, b = b"first file\n", b"second file\n"
    for body in (a, b):
        assert w.put(f"/objects/{hashlib.sha256(body).hexdigest()}", content=body).status_code in (200, 201)
    da, db = (f"sha256:{hashlib.sha256(x).hexdigest()}" for x in (a, b))
    name = f"route-{secrets.token_hex(3)}"
    for path in ("../outside", "/etc", "a/../../b", "a\\b", ""):
        r = w.post(f"/data/{name}", json={"files": {"f.txt": da}, "path": path})
        error_of(r, 400, 2)
    error_of(w.post(f"/data/{name}", json={"files": {"f.txt": da, "g.txt": db}, "kind": "file"}), 400, 2)
    error_of(w.post(f"/data/{name}", json={"files": {"d/f.txt": da}, "kind": "file"}), 400, 2)
    r = w.post(f"/data/{name}", json={"files": {"f.txt": da}, "kind": "file", "path": "models/f.txt"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["kind"], doc["storage_uri"], doc["created"]) == ("file", "models/f.txt", True)
    shown = served.client("reader").get(f"/data/{name}/v1").json()
    assert shown["kind"] == "file"
    again = w.post(f"/data/{name}", json={"files": {"f.txt": da}, "kind": "file", "path": "models/f.txt"})
    assert again.json()["created"] is False
