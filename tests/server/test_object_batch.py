"""Many small objects per request (``POST /objects/batch`` and ``/objects/batch/get``), through the real
``labvault`` executable against the real server: data add and checkout of many files take a few
requests; a batch corrupted or cut short on the way is refused (400, exit 2) with nothing stored,
and a rerun sends what is missing; a damaged answer is refused (exit 5) with nothing written; the
routes' framing, limits and roles."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from labvault.client.frames import MAGIC, MAX_OBJECT, SKIPPED, frame
from tests.server.conftest import Served, error_of
from tests.server.test_client_data import run, writer

_BIG = MAX_OBJECT + 1000  # one file over what a batch carries: it goes (and comes) alone


def _object_requests(served: Served) -> list[str]:
    log = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
    return [line for line in log.splitlines() if '"/api/v1/objects' in line]


def _files(folder: Path, count: int, salt: str, *, big: bool = True) -> dict[str, bytes]:
    files = {f"part{i % 2}/f{i}.bin": f"{salt}:{i}:".encode() + bytes(2000) for i in range(count)}
    if big:
        files["big.bin"] = salt.encode() + bytes(_BIG)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def _missing(served: Served, files: dict[str, bytes]) -> list[str]:
    digests = [f"sha256:{hashlib.sha256(d).hexdigest()}" for d in files.values()]
    answer = served.client("writer").post("/objects/missing", json={"digests": digests})
    assert answer.status_code == 200, answer.text
    missing: list[str] = answer.json()["missing"]
    return missing


def test_data_add_and_checkout_of_many_files_take_a_few_requests(served: Served, tmp_path: Path) -> None:
    name = f"many-{secrets.token_hex(4)}"
    adder, user = tmp_path / "adder", tmp_path / "user"
    adder.mkdir()
    user.mkdir()
    files = _files(adder / "data", 300 if served.backend == "sqlite" else 100, name)
    before = len(_object_requests(served))
    run(adder, writer(served, tmp_path / "home-a"), "data", "add", name, "data")
    sent = _object_requests(served)[before:]
    # One "which do you lack?", one batch of the small files, one PUT of the big one.
    assert len(sent) == 3, sent
    assert sum('"/api/v1/objects/batch"' in line for line in sent) == 1
    assert _missing(served, files) == []

    before = len(_object_requests(served))
    run(user, writer(served, tmp_path / "home-b"), "data", "checkout", name, "data")
    fetched = _object_requests(served)[before:]
    # The trees a level per batch (the root, then part0 and part1), the small files in one batch,
    # the big one alone.
    assert len(fetched) == 4, fetched
    assert sum('"/api/v1/objects/batch/get"' in line for line in fetched) == 3
    for rel, data in files.items():
        assert (user / "data" / rel).read_bytes() == data


class _Tamper(BaseHTTPRequestHandler):
    """A proxy in front of the server that damages every batch upload on its way."""

    upstream = ""
    how = ""

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.how == "old" and self.command == "POST" and self.path.startswith("/api/v1/objects/batch"):
            self._old_server()
            return
        if self.command == "POST" and self.path == "/api/v1/objects/batch" and self.how != "answer":
            body = body[:-1] + bytes([body[-1] ^ 1]) if self.how == "mismatch" else body[:-5]
        skip = {"host", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        answer = httpx.request(self.command, self.upstream + self.path, content=body, headers=headers, timeout=60)
        content = answer.content
        if self.how == "answer" and self.path == "/api/v1/objects/batch/get" and answer.status_code == 200:
            content = content[:-1] + bytes([content[-1] ^ 1])
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _old_server(self) -> None:
        """What a server older than the batch routes answers for them."""
        get = self.path.endswith("/get")
        status, message, code = (404, "not found", 3) if get else (405, "method not allowed", 2)
        content = json.dumps({"error": message, "hint": "see the endpoints at /api/docs", "code": code}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_HEAD = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tamper(served: Served, request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Tamper", (_Tamper,), {"upstream": served.urls[0], "how": request.param})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.parametrize("tamper", ["mismatch"], indirect=True)
def test_a_batch_damaged_on_the_way_is_refused_and_nothing_is_stored(
    served: Served, tmp_path: Path, tamper: str
) -> None:
    """(A batch cut short is refused the same way: see the routes' test below.)"""
    name = f"bad-{secrets.token_hex(4)}"
    project = tmp_path / "proj"
    project.mkdir()
    files = _files(project / "data", 20, name, big=False)
    env = writer(served, tmp_path / "home")
    proc = run(project, {**env, "LABVAULT_URI": tamper}, "data", "add", name, "data", expect=2)
    assert re.search(r"object sha256:[0-9a-f]{64} in the batch hashes to sha256:", proc.stderr), proc.stderr
    assert "nothing was stored" in proc.stderr
    assert len(_missing(served, files)) == len(files)  # none of the batch, not even the intact ones
    run(project, env, "data", "log", name, expect=3)  # and no snapshot
    run(project, env, "data", "add", name, "data")  # a rerun, undamaged, completes
    assert _missing(served, files) == []


@pytest.mark.parametrize("tamper", ["answer"], indirect=True)
def test_a_batch_answer_damaged_on_the_way_is_refused_and_nothing_is_written(
    served: Served, tmp_path: Path, tamper: str
) -> None:
    if served.backend != "sqlite":
        pytest.skip("the client checks what it receives; one backend shows it")
    name = f"got-{secrets.token_hex(4)}"
    adder, user = tmp_path / "adder", tmp_path / "user"
    adder.mkdir()
    user.mkdir()
    files = _files(adder / "data", 20, name)
    run(adder, writer(served, tmp_path / "home-a"), "data", "add", name, "data")
    env = writer(served, tmp_path / "home-b")
    proc = run(user, {**env, "LABVAULT_URI": tamper}, "data", "checkout", name, "data", expect=5)
    assert re.search(r"sent bytes for sha256:[0-9a-f]{64} that hash to sha256:", proc.stderr), proc.stderr
    assert not (user / "data").exists()  # nothing unverified was written, nor kept in the cache
    run(user, env, "data", "checkout", name, "data")
    for rel, data in files.items():
        assert (user / "data" / rel).read_bytes() == data


@pytest.mark.parametrize("tamper", ["old"], indirect=True)
def test_a_server_without_the_batch_routes_gets_objects_one_by_one(
    served: Served, tmp_path: Path, tamper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labvault.client import remote
    from labvault.vault import Vault

    if served.backend != "sqlite":
        pytest.skip("the fallback is the client's; one backend shows it")
    name = f"old-{secrets.token_hex(4)}"
    adder, user, mine, theirs = (tmp_path / n for n in ("adder", "user", "mine", "theirs"))
    for folder in (adder, user, mine, theirs):
        folder.mkdir()
    files = _files(adder / "data", 3, name, big=False)
    old = {**writer(served, tmp_path / "home-a"), "LABVAULT_URI": tamper}
    run(adder, old, "data", "add", name, "data")
    run(user, {**old, "XDG_CACHE_HOME": str(tmp_path / "cache-b")}, "data", "checkout", name, "data")
    assert {rel: (user / "data" / rel).read_bytes() for rel in files} == files

    monkeypatch.setenv("LABVAULT_TOKEN", served.tokens["writer"])
    pushed = _files(mine / "data", 3, name + "-push")
    with Vault.init(mine)[0] as here:
        here.remotes.add("team", tamper, default=True)
        here.data.add("pushed", mine / "data")
        assert remote.push(here, here.remotes.get("team"), ["data:pushed@v1"]).objects_sent == len(pushed) + 3
    with Vault.init(theirs)[0] as there:
        there.remotes.add("team", tamper, default=True)
        assert remote.pull(there, there.remotes.get("team"), ["data:pushed@v1"]).objects_sent == len(pushed) + 3
        there.data.checkout("data:pushed@v1", theirs / "back")
    assert {rel: (theirs / "back" / rel).read_bytes() for rel in pushed} == pushed


def test_the_batch_routes_refuse_bad_frames_and_answer_framed_bytes(served: Served) -> None:
    """Nothing of a refused batch is stored; a reader cannot upload; big objects are marked, not sent."""
    w, r = served.client("writer"), served.client("reader")
    small = secrets.token_bytes(300)
    hexd = hashlib.sha256(small).hexdigest()
    bad_bodies = {
        "no magic": frame(hexd, small),
        "not hex": MAGIC + b"Z" * 64 + (3).to_bytes(8, "big") + b"abc",
        "cut": MAGIC + frame(hexd, small)[:-1],
        "too big": MAGIC + hexd.encode() + (MAX_OBJECT + 1).to_bytes(8, "big"),
        "skipped marker": MAGIC + frame(hexd, None),
    }
    for what, body in bad_bodies.items():
        error_of(w.post("/objects/batch", content=body), 400, 2)
        assert w.head(f"/objects/{hexd}").status_code == 404, what
    error_of(r.post("/objects/batch", content=MAGIC + frame(hexd, small)), 403, 8)
    assert w.post("/objects/batch", content=MAGIC + frame(hexd, small)).json() == {"stored": 1}
    big = secrets.token_bytes(MAX_OBJECT + 1)
    big_hex = hashlib.sha256(big).hexdigest()
    assert w.put(f"/objects/{big_hex}", content=big).status_code == 201

    error_of(r.post("/objects/batch/get", json={"digests": [hexd, "1" * 64]}), 404, 3)
    error_of(r.post("/objects/batch/get", json={"digests": ["../etc"]}), 400, 2)
    answer = r.post("/objects/batch/get", json={"digests": [big_hex, hexd]})
    assert answer.status_code == 200
    # The big one is marked "fetch it alone" (the all-ones length, no bytes), the small one framed.
    assert answer.content == MAGIC + big_hex.encode() + SKIPPED.to_bytes(8, "big") + frame(hexd, small)


@pytest.mark.parametrize("route", ["/api/v1/objects/batch", "/api/v1/objects/{digest}"])
def test_a_client_gone_mid_upload_is_no_server_error(served: Served, route: str) -> None:
    data = secrets.token_bytes(5000)
    hexd = hashlib.sha256(data).hexdigest()
    method, body = ("POST", MAGIC + frame(hexd, data)) if "batch" in route else ("PUT", data)
    host, port = served.urls[0].removeprefix("http://").split(":")
    head = (
        f"{method} {route.format(digest=hexd)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {served.tokens['writer']}\r\nContent-Length: {len(body) + 1000}\r\n\r\n"
    )
    log = served.procs[0].log_path  # type: ignore[attr-defined]
    before = log.read_text().count("\n")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(head.encode() + body[:-100])  # the client goes away mid-body
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while log.read_text().count("\n") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    new = log.read_text().splitlines()[before:]
    assert new, "the server logged no answer"
    assert "Traceback" not in "\n".join(new)
    assert all('"status": 500' not in line for line in new), new
    assert served.client("writer").head(f"/objects/{hexd}").status_code == 404  # nothing stored
