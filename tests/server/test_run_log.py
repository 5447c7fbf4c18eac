"""The single-point log request, served below the framework (server/routes/run_log.py), keeps every rule
of the route: the token read on each request (a revocation counts from the next one, in every server
process), the writer role, the run's state, the body's schema, NaN and infinities, the request log."""

from __future__ import annotations

import json
import threading
import time

import httpx

from tests.server.conftest import Served, error_of, lv


def _run(served: Served) -> str:
    response = served.client("writer").post("/runs", json={"name": "points"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _point(step: int, value: object = 0.5, key: str = "loss") -> dict[str, object]:
    return {"metrics": [{"key": key, "value": value, "step": step}]}


def test_a_revoked_token_is_refused_on_the_very_next_point(served: Served) -> None:
    run = _run(served)
    text = lv(served.root, "server", "token", "create", "eve", "--role", "writer").stdout.strip()
    clients = [
        httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {text}"}) for url in served.urls
    ]
    for n, client in enumerate(clients):
        assert client.post(f"/runs/{run}/log", json=_point(n)).json() == {"params": 0, "tags": 0, "metrics": 1}
    lv(served.root, "server", "token", "revoke", text.split("_")[1])
    for n, client in enumerate(clients):  # every server process, at once
        body = error_of(client.post(f"/runs/{run}/log", json=_point(10 + n)), 401, 8)
        assert "revoked" in str(body["error"])
        client.close()
    history = served.client("reader").get(f"/runs/{run}/history", params={"key": "loss"}).json()["loss"]
    assert [p["step"] for p in history] == list(range(len(served.urls)))


def test_points_need_a_valid_writer_token_before_anything_else(served: Served) -> None:
    run = _run(served)
    bad_body = {"metrics": [{"key": "loss", "value": "high", "step": 0}]}
    for client in (served.client(None), served.client("reader")):
        status = 401 if client is served.client(None) else 403
        error_of(client.post(f"/runs/{run}/log", json=_point(0)), status, 8)
        error_of(client.post(f"/runs/{run}/log", json=bad_body), status, 8)  # the token, then the body
        error_of(client.post("/runs/0123456789ab/log", json=_point(0)), status, 8)  # nor whether a run exists
    wrong = served.tokens["writer"][:-4] + "AAAA"
    response = httpx.post(
        served.urls[0] + f"/api/v1/runs/{run}/log", json=_point(0), headers={"Authorization": f"Bearer {wrong}"}
    )
    assert error_of(response, 401, 8)["error"] == "unknown API token"
    assert response.headers["www-authenticate"] == "Bearer"
    assert served.client("reader").get(f"/runs/{run}/history").json() == {}  # nothing was stored


def test_points_keep_the_body_and_run_rules(served: Served) -> None:
    w = served.client("writer")
    run = _run(served)
    error_of(w.post(f"/runs/{run}/log", json={"metrics": [{"key": "loss", "value": "high", "step": 0}]}), 400, 2)
    error_of(w.post(f"/runs/{run}/log", json={"metrics": [{"key": "../loss", "value": 1, "step": 0}]}), 400, 2)
    error_of(w.post(f"/runs/{run}/log", json={"metrics": [{"key": "loss", "value": 1, "step": -1}]}), 400, 2)
    error_of(w.post(f"/runs/{run}/log", json={"metrics": [{"key": "loss", "value": 1, "step": 0, "x": 1}]}), 400, 2)
    error_of(w.post(f"/runs/{run}/log", content=b"{not json", headers={"content-type": "application/json"}), 400, 2)
    error_of(w.post("/runs/0123456789ab/log", json=_point(0)), 404, 3)
    for step, value in enumerate(["NaN", "Infinity", "-Infinity", 2]):
        assert w.post(f"/runs/{run}/log", json=_point(step, value)).status_code == 200
    history = w.get(f"/runs/{run}/history", params={"key": "loss"}).json()["loss"]
    assert [p["value"] for p in history] == ["NaN", "Infinity", "-Infinity", 2.0]
    # A refused point stored nothing.
    assert w.get(f"/runs/{run}").json()["metrics"] == {"loss": 2.0}
    w.post(f"/runs/{run}/end", json={"status": "finished"}).raise_for_status()
    body = error_of(w.post(f"/runs/{run}/log", json=_point(9)), 409, 4)
    assert "never changed" in str(body["error"])
    assert len(w.get(f"/runs/{run}/history", params={"key": "loss"}).json()["loss"]) == 4


def test_the_request_log_and_metrics_name_the_user_and_the_route(served: Served) -> None:
    run = _run(served)
    assert served.client("writer").post(f"/runs/{run}/log", json=_point(0)).status_code == 200
    deadline = time.monotonic() + 10
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        text = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if any(d["path"] == f"/api/v1/runs/{run}/log" for d in lines):
            break
        time.sleep(0.1)
    logged = [d for d in lines if d["path"] == f"/api/v1/runs/{run}/log"]
    assert logged
    assert logged[-1]["status"] == 200
    assert logged[-1]["user"] == "writer-user"
    metrics = httpx.get(served.urls[0] + "/metrics").text
    assert 'route="/api/v1/runs/{ref}/log"' in metrics


def test_points_committed_together_are_each_answered_by_their_own_rules(served: Served) -> None:
    """Requests waiting at once share one commit; each is still refused or stored on its own."""
    w = served.client("writer")
    running, finished = _run(served), _run(served)
    w.post(f"/runs/{finished}/end", json={"status": "finished"}).raise_for_status()
    cases = [("writer", running, 200)] * 30 + [("writer", finished, 409)] * 10 + [("reader", running, 403)] * 10
    statuses: dict[int, int] = {}

    def send(n: int) -> None:
        role, run, _ = cases[n]
        headers = {"Authorization": f"Bearer {served.tokens[role]}"}
        url = served.urls[n % len(served.urls)] + f"/api/v1/runs/{run}/log"
        statuses[n] = httpx.post(url, json=_point(n), headers=headers, timeout=60).status_code

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [statuses[n] for n in range(len(cases))] == [expected for *_, expected in cases]
    stored = w.get(f"/runs/{running}/history", params={"key": "loss"}).json()["loss"]
    assert sorted(p["step"] for p in stored) == list(range(30))
    assert w.get(f"/runs/{finished}/history").json() == {}
