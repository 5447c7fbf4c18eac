"""A log request with an Idempotency-Key stores its batch and the key's answer in one transaction: a
server that dies between storing the batch and recording the answer has stored neither, so the
client's retry (the same key, once the first claim is old) stores the batch exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from labvault.entities import utcnow
from labvault.server.app import create_app
from labvault.storage.meta.repos import access as requests_repo
from labvault.storage.meta.tables.access import server_requests
from labvault.vault import Vault


class _Killed(Exception):
    """Stands for the server process dying at that point."""


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_server_killed_before_recording_the_answer_never_stores_the_batch_twice(
    any_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    _, token = any_vault.access.create_token("writer-user", role="writer")
    points = [{"key": "loss", "value": i * 0.5, "step": i} for i in range(100)]
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "batch-0-99"}
    with TestClient(create_app(any_vault), base_url="http://127.0.0.1") as client:
        run = client.post("/api/v1/runs", json={"name": "once"}, headers=headers).json()["id"]

        def killed(*_args: Any, **_kwargs: Any) -> None:
            raise _Killed  # after the batch was stored, before its answer was recorded

        monkeypatch.setattr(requests_repo, "finish_request", killed)
        with pytest.raises(_Killed):
            client.post(f"/api/v1/runs/{run}/log", json={"metrics": points}, headers=headers)
        monkeypatch.undo()
        with any_vault.meta.transaction() as conn:  # the retry comes after a dead claim is taken over
            conn.execute(sa.update(server_requests).values(created_at=utcnow() - timedelta(minutes=10)))
        retry = client.post(f"/api/v1/runs/{run}/log", json={"metrics": points}, headers=headers)
        assert retry.status_code == 200, retry.text
        assert retry.json() == {"params": 0, "tags": 0, "metrics": 100}
        again = client.post(f"/api/v1/runs/{run}/log", json={"metrics": points}, headers=headers)
        assert again.json() == retry.json()
        history = client.get(f"/api/v1/runs/{run}/history", params={"key": "loss"}, headers=headers).json()
    assert [p["step"] for p in history["loss"]] == list(range(100))
