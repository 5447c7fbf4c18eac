"""Reproduction records, data lock status and readiness through the real server, with their bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from labvault.vault import Vault
from tests.server.conftest import Served, error_of, lv, start_server, stop_server


def _upload(served: Served, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    response = served.client("writer").put(f"/objects/sha256:{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return f"sha256:{digest}"


def _ended_run(served: Served, tags: dict[str, str] | None = None, report: bytes | None = None) -> dict[str, str]:
    w = served.client("writer")
    run = w.post("/runs", json={"name": "r", "tags": tags or {}}).json()
    if report is not None:
        added = w.post(
            f"/runs/{run['id']}/artifacts", json={"name": "reproduce.json", "digest": _upload(served, report)}
        )
        assert added.status_code == 201, added.text
    assert w.post(f"/runs/{run['id']}/end", json={}).status_code == 200
    return {"id": str(run["id"]), "ref": str(run["ref"])}


def test_reproductions_list_and_show(served: Served) -> None:
    original = _ended_run(served)
    report = {"verdict": "reproduced", "original": original["ref"], "metrics": [{"key": "acc", "ok": True}]}
    tags = {"reproduces": original["ref"], "reproduce_verdict": "reproduced"}
    rerun = _ended_run(served, tags, json.dumps(report).encode())
    second = _ended_run(served, tags)  # the second rerun of --twice: no report of its own
    r = served.client("reader", server=len(served.urls) - 1)  # the other server process on the team vault

    listed = r.get(f"/runs/{original['id']}/reproductions")
    assert listed.status_code == 200, listed.text
    assert [(x["ref"], x["verdict"], x["has_report"]) for x in listed.json()] == [
        (rerun["ref"], "reproduced", True),
        (second["ref"], "reproduced", False),
    ]
    shown = r.get(f"/runs/{original['ref']}/reproductions/{rerun['ref']}").json()
    assert shown["report"] == report
    assert shown["reproduces"] == original["ref"]
    assert r.get(f"/runs/{original['id']}/reproductions/{second['id']}").json()["report"] is None
    assert r.get(f"/runs/{rerun['id']}/reproductions").json() == []


def test_reproductions_bad_input(served: Served) -> None:
    r = served.client("reader")
    original = _ended_run(served)
    stranger = _ended_run(served)
    error_of(r.get("/runs/abcdef0123456789/reproductions"), 404, 3)
    error_of(r.get("/runs/not-a-run/reproductions"), 400, 2)
    error_of(r.get(f"/runs/{original['id']}/reproductions/abcdef0123456789"), 404, 3)
    body = error_of(r.get(f"/runs/{original['id']}/reproductions/{stranger['id']}"), 404, 3)
    assert "not a reproduction" in str(body["error"])
    # A report that is not JSON, or nested past the bound, is refused with the error body, never a 500.
    tags = {"reproduces": original["ref"]}
    for bad in (b"\xff\xfe not json", b"[" * 100_000 + b"]" * 100_000):
        rerun = _ended_run(served, tags, bad)
        error_of(r.get(f"/runs/{original['id']}/reproductions/{rerun['id']}"), 400, 2)
    error_of(served.client(None).get(f"/runs/{original['id']}/reproductions"), 401, 8)


def test_lock_status(served: Served) -> None:
    r = served.client("reader")
    error_of(r.get("/data/lock"), 404, 3)  # nothing pinned yet
    src = served.root / "lock.csv"
    src.write_text("a,b\n1,2\n")
    with Vault.open(served.root) as vault:
        vault.data.add("locked", src)
    status = r.get("/data/lock", params={"name": "locked"})
    assert status.status_code == 200, status.text
    assert [(s["path"], s["ref"], s["clean"]) for s in status.json()] == [("lock.csv", "data:locked@v1", True)]
    src.write_text("a,b\n1,2\n3,4\n")
    (doc,) = served.client("reader", server=len(served.urls) - 1).get("/data/lock", params={"path": "lock.csv"}).json()
    assert doc["modified"] == ["lock.csv"]
    assert not doc["clean"]
    error_of(r.get("/data/lock", params={"name": "nope"}), 404, 3)
    for path in ("../lock.csv", "/etc/passwd", str(src), "lock.csv\x00", "..\\lock.csv"):
        error_of(r.get("/data/lock", params={"path": path}), 404, 3)
    error_of(r.get("/data/lock", params={"name": "x" * 200}), 400, 2)
    error_of(served.client(None).get("/data/lock"), 401, 8)


JOB = """\
import os, random
import labvault as lv
rng = random.Random(int(os.environ["LABVAULT_SEED"]))
with lv.start_run() as run:
    run.log_metric("score", rng.random())
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_a_real_reproduction_is_served(tmp_path: Path) -> None:
    """``labvault reproduce`` writes the records; the server lists them and returns its report."""
    root = tmp_path / "proj"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    lv(root, "init")
    (root / "job.py").write_text(JOB)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "job")
    out = lv(root, "run", "--seed", "3", "--", sys.executable, "job.py")
    run_id = out.stderr.split("run:")[1].split()[0]
    verdict = json.loads(lv(root, "reproduce", f"run:{run_id}", "--env", "current", "--json").stdout)
    with Vault.open(root) as vault:
        _, token = vault.access.create_token("reader-user", role="reader")
    proc, url = start_server(root)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=60) as client:
            (listed,) = client.get(f"/runs/{run_id}/reproductions").json()
            assert listed["verdict"] == verdict["verdict"] == "reproduced"
            shown = client.get(f"/runs/{run_id}/reproductions/{listed['id']}").json()
        assert shown["report"]["verdict"] == "reproduced"
        assert shown["report"]["original"] == f"run:{run_id}"
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log


@pytest.mark.postgres
def test_readyz_is_not_ready_when_the_object_store_is_down(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own moto server, stopped under a running server: /readyz says 503 until it is back."""
    pytest.importorskip("moto.server")
    from tests.s3server import S3Server

    s3 = S3Server().start()
    try:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        root = tmp_path / "proj"
        root.mkdir()
        lv(root, "init", "--db", pg_url, "--objects", f"s3://{s3.bucket()}/vault")
        proc, url = start_server(root)
        try:
            assert httpx.get(url + "/readyz", timeout=30).status_code == 200
            s3.stop()
            started = time.monotonic()
            down = httpx.get(url + "/readyz", timeout=60)
            assert down.status_code == 503, down.text
            assert down.json()["code"] == 7
            assert time.monotonic() - started < 30
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200  # the process itself is fine
        finally:
            log = stop_server(proc)
        assert "Traceback" not in log
    finally:
        s3.stop()


def test_many_concurrent_writers_do_not_exhaust_the_connection_pool(served: Served) -> None:
    """More concurrent requests than the database pool has connections: all answered, none waits for one."""
    clients = 24
    w = served.client("writer")
    runs = [str(w.post("/runs", json={}).json()["id"]) for _ in range(clients)]
    statuses: list[int] = []
    slowest = [0.0]

    def work(n: int) -> None:
        url = served.urls[n % len(served.urls)] + f"/api/v1/runs/{runs[n]}/log"
        headers = {"Authorization": f"Bearer {served.tokens['writer']}"}
        with httpx.Client(headers=headers, timeout=25) as c:
            for step in range(15):
                t = time.monotonic()
                try:
                    statuses.append(
                        c.post(url, json={"metrics": [{"key": "loss", "value": 1.0, "step": step}]}).status_code
                    )
                except httpx.TimeoutException:
                    statuses.append(0)
                slowest[0] = max(slowest[0], time.monotonic() - t)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * clients * 15, sorted(set(statuses))
    assert slowest[0] < 20
    stored = w.get(f"/runs/{runs[0]}/history", params={"key": "loss"}).json()["loss"]
    assert len(stored) == 15
