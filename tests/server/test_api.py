"""Each resource's happy path and its bad input through the real server (SQLite, and PostgreSQL with
two server processes sharing the vault)."""

from __future__ import annotations

import hashlib
import threading

import httpx
import pytest

from labvault.refs import Digest
from labvault.vault import Vault
from tests.server.conftest import Served, error_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(served: Served, **body: object) -> dict[str, object]:
    response = served.client("writer").post("/runs", json=body)
    assert response.status_code == 201, response.text
    doc: dict[str, object] = response.json()
    return doc


def _upload(served: Served, data: bytes) -> str:
    digest = _sha(data)
    response = served.client("writer").put(f"/objects/sha256:{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def test_run_lifecycle(served: Served) -> None:
    w = served.client("writer")
    run = _run(served, name="train", params={"lr": 0.1, "depth": 4}, tags={"team": "a"})
    assert run["user"] == "writer-user"
    assert run["status"] == "running"
    assert run["ref"] == f"run:{run['id']}"
    rid = run["id"]
    batch = {
        "params": {"epochs": 3},
        "tags": {"stage": "dev"},
        "metrics": [{"key": "auc", "value": 0.8}, {"key": "auc", "value": 0.95}, {"key": "loss", "value": "NaN"}],
    }
    assert w.post(f"/runs/{rid}/log", json=batch).json() == {"params": 1, "tags": 1, "metrics": 3}
    history = w.get(f"/runs/{rid}/history", params={"key": "auc"}).json()
    assert [(p["step"], p["value"]) for p in history["auc"]] == [(0, 0.8), (1, 0.95)]
    digest = _upload(served, b"weights")
    art = w.post(f"/runs/{rid}/artifacts", json={"name": "model.bin", "digest": f"sha256:{digest}"})
    assert art.status_code == 201
    assert art.json()["size"] == 7
    ended = w.post(f"/runs/{rid}/end", json={"status": "finished"}).json()
    assert ended["status"] == "finished"
    assert ended["metrics"] == {"auc": 0.95, "loss": "NaN"}
    # Finished runs never change: 409.
    error_of(w.post(f"/runs/{rid}/log", json={"params": {"x": 1}}), 409, 4)
    found = w.get("/runs", params={"filter": "metrics.auc > 0.9 and params.depth = 4"}).json()
    assert rid in [r["id"] for r in found]
    other = _run(served, name="other")
    compared = w.get("/runs/compare", params=[("ref", rid), ("ref", other["id"])])
    assert compared.status_code == 200, compared.text
    assert w.get(f"/runs/{rid}/export").json()["id"] == rid
    error_of(w.delete(f"/runs/{other['id']}"), 409, 4)  # still running
    w.post(f"/runs/{other['id']}/end", json={"status": "failed", "error": "boom"})
    assert w.delete(f"/runs/{other['id']}").json()["deleted_at"] is not None
    assert other["id"] not in [r["id"] for r in w.get("/runs").json()]
    assert w.post(f"/runs/{other['id']}/restore").json()["deleted_at"] is None


def test_run_bad_input(served: Served) -> None:
    w = served.client("writer")
    error_of(w.get("/runs/0123456789ab"), 404, 3)
    error_of(w.get("/runs", params={"filter": "metrics.auc >>> 1"}), 400, 2)
    error_of(w.post("/runs", json={"name": "x", "surprise": 1}), 400, 2)
    error_of(w.post("/runs", content=b"{not json", headers={"content-type": "application/json"}), 400, 2)
    rid = _run(served)["id"]
    error_of(w.post(f"/runs/{rid}/log", json={"metrics": [{"key": "auc", "value": "high"}]}), 400, 2)
    error_of(w.post(f"/runs/{rid}/log", json={"metrics": [{"key": "../auc", "value": 1}]}), 400, 2)
    error_of(w.post(f"/runs/{rid}/artifacts", json={"name": "m", "digest": "sha256:" + "0" * 64}), 404, 3)
    error_of(w.post(f"/runs/{rid}/log", json={}, headers={"Idempotency-Key": "bad key/.."}), 400, 2)


def test_a_retried_batch_with_the_same_key_is_stored_once(served: Served) -> None:
    w = served.client("writer")
    rid = _run(served)["id"]
    batch = {"metrics": [{"key": "m", "value": float(i), "step": i} for i in range(100)]}
    first = w.post(f"/runs/{rid}/log", json=batch, headers={"Idempotency-Key": "batch-1"})
    # The retry goes to the other server process when there are two.
    retry = served.client("writer", server=len(served.urls) - 1).post(
        f"/runs/{rid}/log", json=batch, headers={"Idempotency-Key": "batch-1"}
    )
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json()
    assert len(w.get(f"/runs/{rid}/history", params={"key": "m"}).json()["m"]) == 100
    w.post(f"/runs/{rid}/log", json=batch, headers={"Idempotency-Key": "batch-2"})
    assert len(w.get(f"/runs/{rid}/history", params={"key": "m"}).json()["m"]) == 200


def test_concurrent_writers(served: Served) -> None:
    runs = [_run(served)["id"] for _ in range(4)]
    errors: list[str] = []

    def writer(n: int) -> None:
        client = served.client("writer", server=n % len(served.urls))
        for b in range(10):
            batch = {"metrics": [{"key": f"k{n}", "value": float(i), "step": b * 50 + i} for i in range(50)]}
            response = client.post(f"/runs/{runs[n % 4]}/log", json=batch)
            if response.status_code != 200:
                errors.append(response.text)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    w = served.client("reader")
    for n in range(8):
        assert len(w.get(f"/runs/{runs[n % 4]}/history", params={"key": f"k{n}"}).json()[f"k{n}"]) == 500


def test_upload_download_and_ranges(served: Served) -> None:
    w = served.client("writer")
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = _upload(served, data)
    again = w.put(f"/objects/{digest}", content=data)
    assert again.status_code == 200
    assert again.json()["created"] is False
    r = served.client("reader")
    assert r.get(f"/objects/{digest}").content == data
    part = r.get(f"/objects/{digest}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert r.get(f"/objects/{digest}", headers={"Range": "bytes=-10"}).content == data[-10:]
    assert r.get(f"/objects/{digest}", headers={"Range": "bytes=1048570-"}).content == data[1048570:]
    error_of(r.get(f"/objects/{digest}", headers={"Range": f"bytes={len(data)}-"}), 400, 2)
    error_of(r.get(f"/objects/{digest}", headers={"Range": "lines=1-2"}), 400, 2)
    assert r.head(f"/objects/{digest}").headers["content-length"] == str(len(data))
    error_of(r.get("/objects/" + "0" * 64), 404, 3)


def test_a_corrupt_upload_is_refused_and_nothing_is_stored(served: Served) -> None:
    w = served.client("writer")
    data = b"the real content"
    digest = _sha(data)
    body = error_of(w.put(f"/objects/{digest}", content=b"the real c0ntent"), 422, 1)
    assert "nothing was stored" in str(body["error"])
    assert w.head(f"/objects/{digest}").status_code == 404
    assert w.head(f"/objects/{_sha(b'the real c0ntent')}").status_code == 404


def test_a_corrupt_object_is_quarantined_by_the_server_unless_the_client_says_it_verifies(served: Served) -> None:
    """``X-Labvault-Verify: client``: the bytes as stored, not hashed by the server (the client hashes
    them); without it a whole download is verified as it is sent, and a corrupt object quarantined."""
    if served.backend != "sqlite":
        pytest.skip("damages a file of the local object store")
    from tests.corruption import flip_byte

    data = bytes(range(256)) * 12_000  # 3 MB: more than one block of a download
    digest = _upload(served, data)
    with Vault.open(served.root) as vault:
        flip_byte(vault.objects, Digest(digest))  # type: ignore[arg-type]
    r = served.client("reader")
    sent = r.get(f"/objects/{digest}", headers={"X-Labvault-Verify": "client"})
    assert sent.status_code == 200
    assert sent.headers["etag"] == f'"{digest}"'
    assert sent.content[:-1] == data[:-1]  # as stored, for the client to refuse
    assert sent.content != data
    assert r.head(f"/objects/{digest}").status_code == 200  # the server did not look
    with pytest.raises(httpx.HTTPError):  # verified as it is sent: broken off before its end
        r.get(f"/objects/{digest}").raise_for_status()
    assert "quarantined" in str(error_of(r.get(f"/objects/{digest}"), 500, 5)["error"])


def test_chunked_resumable_upload(served: Served) -> None:
    w = served.client("writer")
    data = b"".join(bytes([i]) * 100_000 for i in range(10))
    chunks = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    names = [f"sha256:{_sha(c)}" for c in chunks]
    whole = _sha(data)
    error_of(w.post(f"/objects/{whole}/compose", json={"chunks": names}), 404, 3)
    _upload(served, chunks[0])  # then the connection "drops": the client asks what is missing
    assert w.post("/objects/missing", json={"digests": names}).json()["missing"] == names[1:]
    for c in chunks[1:]:
        _upload(served, c)
    assert w.post("/objects/missing", json={"digests": names}).json()["missing"] == []
    error_of(w.post(f"/objects/{'1' * 64}/compose", json={"chunks": names}), 422, 1)
    done = w.post(f"/objects/{whole}/compose", json={"chunks": names})
    assert done.status_code == 201
    assert done.json()["size"] == len(data)
    assert served.client("reader").get(f"/objects/{whole}").content == data


def test_models_register_promote_approve_rollback_archive(served: Served) -> None:
    w, m = served.client("writer"), served.client("maintainer")
    versions = []
    for content in (b"model one", b"model two"):
        rid = _run(served)["id"]
        digest = _upload(served, content)
        w.post(f"/runs/{rid}/artifacts", json={"name": "model.bin", "digest": f"sha256:{digest}"})
        w.post(f"/runs/{rid}/end", json={})
        reg = w.post("/models/fraud/detector/versions", json={"run": rid, "artifact": "model.bin", "bump": "minor"})
        assert reg.status_code == 201, reg.text
        assert reg.json()["created_by"] == "writer-user"
        versions.append(reg.json()["version"])
    assert [v["version"] for v in w.get("/models/fraud/detector/versions").json()] != []
    promoted = m.post("/models/fraud/detector/aliases/prod", json={"version": versions[0]})
    assert promoted.status_code == 200, promoted.text
    m.post("/models/fraud/detector/aliases/prod", json={"version": versions[1]})
    assert m.post("/models/fraud/detector/aliases/prod/approve", json={"version": versions[1]}).json()["by"] == (
        "maintainer-user"
    )
    back = m.post("/models/fraud/detector/aliases/prod/rollback", json={})
    assert back.status_code == 200
    assert back.json()["after"] is not None
    shown = w.get("/models/fraud/detector").json()
    assert shown["aliases"]["prod"].endswith(versions[0]) or shown["aliases"]["prod"] == versions[0]
    assert w.get(f"/models/fraud/detector/versions/{versions[0]}").json()["files"]
    assert len(w.get("/models/fraud/detector/history", params={"alias": "prod"}).json()) == 3
    assert m.delete("/models/fraud/detector/aliases/prod").status_code == 200
    archived = m.post(f"/models/fraud/detector/versions/{versions[1]}/archive", json={"reason": "old"})
    assert archived.status_code == 200
    assert archived.json()["changed"] is True
    error_of(w.get("/models/fraud/nothing/versions"), 404, 3)
    error_of(m.post("/models/fraud/detector/aliases/prod", json={"version": "9.9.9"}), 404, 3)
    # The audit chain names the authenticated users, and verifies.
    events = w.get("/audit", params={"subject": "fraud/detector"}).json()
    assert {e["actor"] for e in events} == {"writer-user", "maintainer-user"}
    assert w.get("/audit/verify").json()["ok"] is True
    lineage = w.get("/lineage", params={"ref": f"fraud/detector@{versions[0]}"})
    assert lineage.status_code == 200
    assert lineage.json()["nodes"]


def test_data_snapshots(served: Served) -> None:
    src = served.root / "tx.csv"
    with Vault.open(served.root) as vault:
        src.write_text("a,b\n1,2\n")
        vault.data.add("tx", src)
        src.write_text("a,b\n1,2\n3,4\n")
        vault.data.add("tx", src)
    r = served.client("reader")
    assert "tx" in [d["dataset_name"] for d in r.get("/data").json()]
    assert [s["version"] for s in r.get("/data/tx").json()][:2] == ["v2", "v1"]
    assert r.get("/data/tx/v1").json()["ref"] == "data:tx@v1"
    manifest = r.get("/data/tx/v2/manifest").json()
    assert [f["path"] for f in manifest["files"]] == ["tx.csv"]
    diff = r.get("/data/diff", params={"a": "data:tx@v1", "b": "data:tx@v2"})
    assert diff.status_code == 200, diff.text
    error_of(r.get("/data/tx/v9"), 404, 3)
    error_of(r.get("/data/nope"), 404, 3)


def test_docs_schema_health_and_limits(served: Served) -> None:
    import httpx

    base = served.urls[0]
    schema = httpx.get(base + "/api/v1/openapi.json").json()
    assert "/api/v1/runs" in schema["paths"]
    page = httpx.get(base + "/api/docs").text
    assert "openapi.json" in page
    assert "http" not in page.replace("/api/v1/openapi.json", "").split("<script>")[1]
    assert httpx.get(base + "/readyz").json() == {"status": "ready"}
    scraped = httpx.get(base + "/metrics").text
    assert 'labvault_http_requests_total{method="GET",route="/api/v1/runs",status="200"}' in scraped
    assert "labvault_http_request_seconds_count" in scraped
    big = b'{"params": {"x": "' + b"a" * (17 << 20) + b'"}}'
    response = served.client("writer").post("/runs", content=big, headers={"content-type": "application/json"})
    error_of(response, 413)

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"params": {"x": "'
        for _ in range(17):
            yield b"a" * (1 << 20)
        yield b'"}}'

    response = served.client("writer").post("/runs", content=chunks(), headers={"content-type": "application/json"})
    error_of(response, 413, 2)
    error_of(served.client("reader").get("/no/such/route"), 404, 3)


@pytest.mark.parametrize("role", ["writer"])
def test_records_name_the_token_user_not_the_client(served: Served, role: str) -> None:
    run = _run(served, tags={"user": "mallory"})
    assert run["user"] == "writer-user"


def test_snapshot_from_uploaded_objects(served: Served) -> None:
    w = served.client("writer")
    table, notes = b"a,b\n1,2\n3,4\n", b"hello"
    files = {"train/t.csv": f"sha256:{_upload(served, table)}", "README": f"sha256:{_upload(served, notes)}"}
    made = w.post("/data/uploaded", json={"files": files, "message": "from the API"})
    assert made.status_code == 201, made.text
    doc = made.json()
    assert doc["created"] is True
    assert doc["created_by"] == "writer-user"
    assert doc["file_count"] == 2
    assert doc["record_count"] == 2
    again = w.post("/data/uploaded", json={"files": files})
    assert again.json()["created"] is False
    assert again.json()["version"] == doc["version"]
    manifest = w.get(f"/data/uploaded/{doc['version']}/manifest").json()
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == files
    for bad in ("../x", "/abs", "a//b", "a\\b", "a/./b", "a\x00b", ""):
        error_of(w.post("/data/uploaded", json={"files": {bad: files["README"]}}), 400, 2)
    error_of(w.post("/data/uploaded", json={"files": {"x": "sha256:" + "0" * 64}}), 404, 3)
    error_of(w.post("/data/uploaded", json={"files": {"a": files["README"], "a/b": files["README"]}}), 400, 2)
    assert w.post("/data/..%2fx", json={"files": files}).status_code in (400, 404, 405)
    error_of(served.client("reader").post("/data/uploaded", json={"files": files}), 403, 8)
