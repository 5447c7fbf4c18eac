"""Path traversal in every parameter that names something: plain, URL-encoded, double-encoded,
backslashes, absolute, NUL. Nothing outside the vault is read or written, and nothing is a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import Served

CANARY = "labvault-canary-3f9c2a1b"
ATTACKS = [
    "../../../../canary.txt",
    "..%2f..%2f..%2fcanary.txt",
    "..%252f..%252fcanary.txt",
    "..\\..\\canary.txt",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "a%00b",
    "..",
    "%2e%2e",
]


@pytest.fixture(scope="module")
def canary(served: Served) -> Path:
    # Beside the project, where a climbing path would land.
    path = served.root.parent / "canary.txt"
    path.write_text(CANARY)
    return path


def _targets(attack: str) -> list[tuple[str, str, dict[str, object] | None]]:
    return [
        ("GET", f"/runs/{attack}", None),
        ("GET", f"/runs/{attack}/history", None),
        ("GET", f"/runs/{attack}/reproductions", None),
        ("GET", f"/runs/x/reproductions/{attack}", None),
        ("GET", f"/data/lock?path={attack}", None),
        ("GET", f"/data/lock?name={attack}", None),
        ("GET", f"/data/{attack}", None),
        ("GET", f"/data/tx/{attack}", None),
        ("GET", f"/data/{attack}/v1/manifest", None),
        ("GET", f"/models/{attack}/m/versions", None),
        ("GET", f"/models/p/{attack}", None),
        ("GET", f"/models/p/m/versions/{attack}", None),
        ("GET", f"/objects/{attack}", None),
        ("PUT", f"/objects/{attack}", None),
        ("POST", f"/models/p/m/aliases/{attack}", {"version": "1.0.0"}),
        ("GET", f"/lineage?ref={attack}", None),
        ("GET", f"/data/diff?a=data:{attack}@v1&b=data:tx@v1", None),
        ("POST", "/objects/missing", {"digests": [attack]}),
        ("POST", "/runs", {"name": attack, "project": attack}),
    ]


@pytest.mark.parametrize("attack", ATTACKS)
def test_traversal_never_escapes(served: Served, canary: Path, attack: str) -> None:
    client = served.client("admin")
    for method, url, body in _targets(attack):
        # The raw URL goes out as written: httpx would otherwise normalise "../" away.
        request = client.build_request(method, url, json=body)
        request.url = client.base_url.copy_with(raw_path=client.base_url.raw_path.rstrip(b"/") + url.encode())
        response = client.send(request)
        # 200 only where the HTTP layer resolved a literal ".." segment to another API route (a listing).
        allowed = (400, 401, 404, 405, 409, 422) + ((200,) if attack == ".." else ())
        assert response.status_code in allowed, (method, url, response.status_code, response.text)
        assert CANARY not in response.text
        assert "root:" not in response.text
    assert canary.read_text() == CANARY


def test_artifact_names_cannot_climb(served: Served) -> None:
    w = served.client("writer")
    rid = w.post("/runs", json={}).json()["id"]
    digest = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    w.put(f"/objects/{digest}", content=b"hello\n")
    for name in ["../x", "/etc/passwd", "a/../../b", "..\\..\\x", "a\x00b"]:
        response = w.post(f"/runs/{rid}/artifacts", json={"name": name, "digest": f"sha256:{digest}"})
        assert response.status_code == 400, (name, response.text)
