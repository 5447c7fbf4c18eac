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
from labvault.vault import Vault
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


def test_a_corrupt_object_on_the_server_is_refused_by_the_client(served: Served, tmp_path: Path) -> None:
    """The client hashes every download itself (and tells the server it need not): an object
    damaged on the server's disk is refused, exit 5, and nothing is written or cached."""
    if served.backend != "sqlite":
        pytest.skip("damages a file of the local object store")
    from tests.corruption import flip_byte

    env = writer(served, tmp_path / "home")
    data = random.Random(4).randbytes(3 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    digest = run(tmp_path, env, "object", "put", "big.bin").stdout.strip()
    with Vault.open(served.root) as vault:
        flip_byte(vault.objects, Digest(digest.removeprefix("sha256:")))  # type: ignore[arg-type]
    failed = run(tmp_path, env, "object", "cat", digest, "-o", "copy.bin", expect=5)
    assert "does not match its sha256 as downloaded" in failed.stderr
    assert not (tmp_path / "copy.bin").exists()
    failed = run(tmp_path, env, "object", "cat", digest, "-o", "copy.bin", expect=5)  # nothing cached
    assert not (tmp_path / "copy.bin").exists()


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


def _linked_data(folder: Path) -> None:
    """A dataset folder with links of every kind and empty folders (a local vault keeps them all)."""
    (folder / "linked" / "sub").mkdir(parents=True)
    (folder / "linked" / "a.txt").write_text("a\n")
    (folder / "linked" / "sub" / "b.csv").write_text("x,y\n1,2\n")
    (folder / "linked" / "empty").mkdir()
    (folder / "linked" / "nested" / "deeper").mkdir(parents=True)
    for rel, target in {
        "latest": "a.txt",  # a file beside it
        "sub/up": "../a.txt",  # a file above it
        "to-sub": "sub",  # a folder
        "dangling": "nowhere",  # nothing
        "climbs": "../../outside",  # out of the dataset, recorded as text like any other
        "absolute": "/etc/passwd",
    }.items():
        (folder / "linked" / rel).symlink_to(target)
    (folder / "bare" / "only-empty").mkdir(parents=True)  # no file at all


def _tree(folder: Path) -> dict[str, tuple[str, str]]:
    """Every entry below ``folder``: a file's bytes (hashed), a link's target, a folder."""
    out: dict[str, tuple[str, str]] = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(base) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def test_links_and_empty_folders_are_kept_as_locally(served: Served, tmp_path: Path) -> None:
    name = f"ln-{secrets.token_hex(4)}"
    local, remote, other = tmp_path / "local", tmp_path / "remote", tmp_path / "other"
    for folder in (local, remote):
        folder.mkdir()
        _linked_data(folder)
    local_env = client_env(tmp_path / "home-local")
    run(local, local_env, "init")
    through = writer(served, tmp_path / "home-remote")
    outs: dict[Path, list[str]] = {}
    for folder, env in ((local, local_env), (remote, through)):
        outs[folder] = [
            run(folder, env, *args).stdout
            for args in (
                ("data", "add", name, "linked"),
                ("data", "add", f"{name}-bare", "bare"),
                ("data", "status"),
                ("data", "show", name, "--json"),
                ("data", "checkout", f"{name}@v1", "restored"),
                ("data", "checkout", f"{name}-bare@v1", "restored-bare"),
                ("data", "status"),
            )
        ]
    # The same snapshots (the same content hashes), the same listing, the same restored trees.
    assert [_masked(o) for o in outs[local]] == [_masked(o) for o in outs[remote]]
    shown = json.loads(outs[remote][3])
    assert {link["path"] for link in shown["links"]} == {"latest", "sub/up", "to-sub", "dangling", "climbs", "absolute"}
    for folder in (local, remote):
        assert _tree(folder / "restored") == _tree(folder / "linked")
        assert _tree(folder / "restored-bare") == _tree(folder / "bare") == {"only-empty": ("dir", "")}
    assert (remote / "restored" / "empty").is_dir()
    assert (remote / "restored" / "nested" / "deeper").is_dir()

    # Another machine checks the same snapshot out from labvault.lock alone.
    other.mkdir()
    (other / "labvault.lock").write_text((remote / "labvault.lock").read_text())
    run(other, writer(served, tmp_path / "home-other"), "data", "checkout")
    assert _tree(other / "linked") == _tree(remote / "linked")
    assert _tree(other / "bare") == _tree(remote / "bare")


def test_a_link_in_the_way_of_a_folder_is_replaced_never_written_through(served: Served, tmp_path: Path) -> None:
    """v1 holds a link ``x`` to a folder outside the checkout; v2 holds a folder ``x`` with a file.
    Checking v2 out over v1 removes the link and makes the folder: nothing lands outside."""
    name = f"esc-{secrets.token_hex(4)}"
    outside = tmp_path / "outside"
    outside.mkdir()
    adder, user = tmp_path / "adder", tmp_path / "user"
    (adder / "d").mkdir(parents=True)
    (adder / "d" / "keep.txt").write_text("keep\n")
    (adder / "d" / "x").symlink_to("../../outside")
    env = writer(served, tmp_path / "home-a")
    run(adder, env, "data", "add", name, "d")
    (adder / "d" / "x").unlink()
    (adder / "d" / "x").mkdir()
    (adder / "d" / "x" / "f.txt").write_text("inside\n")
    run(adder, env, "data", "add", name, "d")
    user.mkdir()
    env = writer(served, tmp_path / "home-u")
    run(user, env, "data", "checkout", f"{name}@v1", "co")
    assert os.readlink(user / "co" / "x") == "../../outside"
    assert (user / "co" / "x").resolve() == outside.resolve()
    run(user, env, "data", "checkout", f"{name}@v2", "co")
    assert not (user / "co" / "x").is_symlink()
    assert (user / "co" / "x" / "f.txt").read_text() == "inside\n"
    assert list(outside.iterdir()) == []


def test_the_snapshot_route_checks_the_links_and_folders_a_client_sends(served: Served) -> None:
    w = served.client("writer")
    body = b"linked file\n"
    w.put(f"/objects/{hashlib.sha256(body).hexdigest()}", content=body)
    files = {"f.txt": f"sha256:{hashlib.sha256(body).hexdigest()}"}
    name = f"route-ln-{secrets.token_hex(3)}"
    for extra in (
        {"links": {"../up": "f.txt"}},  # a link's path climbs
        {"links": {"/abs": "f.txt"}},
        {"links": {"l": ""}},  # an empty target
        {"links": {"l": "a\x00b"}},  # a NUL in the target
        {"links": {"l": "\ud800"}},  # not UTF-8
        {"links": {"f.txt": "x"}},  # a link where a file is
        {"links": {"f.txt/l": "x"}},  # below a file
        {"dirs": ["../out"]},
        {"dirs": ["f.txt"]},  # a folder where a file is
        {"links": {"l": "x"}, "dirs": ["l"]},
        {"links": {"l": "x" * 5000}},
        {"links": {"\ud800": "x"}},  # a path that is not UTF-8
        {"dirs": ["\ud800"]},
        {"files": {"\ud800": files["f.txt"]}},
    ):
        # As ASCII JSON: a lone surrogate goes as its \u escape, which httpx's encoder refuses to send.
        raw = json.dumps({"files": files, **extra})
        r = w.post(f"/data/{name}", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (extra, r.text)
    error_of(w.post(f"/data/{name}", json={"files": files, "links": {"l": "f.txt"}, "kind": "file"}), 400, 2)
    r = w.post(f"/data/{name}", json={"files": files, "links": {"l": "f.txt"}, "dirs": ["e/deeper"]})
    assert r.status_code == 201, r.text
    listed = w.get(f"/data/{name}/v1/manifest").json()
    assert [link["path"] for link in listed["links"]] == ["l"]
