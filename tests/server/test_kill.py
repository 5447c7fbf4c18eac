"""kill -9 of the server during uploads, snapshots and promotions: the vault stays fsck-clean, the
audit chain verifies, and every acknowledged write is there. ``LABVAULT_TEST_FULL=1`` kills more times."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from labvault.refs import Digest
from labvault.vault import Vault
from tests.server.conftest import lv, start_server

KILLS = 5 if os.environ.get("LABVAULT_TEST_FULL") == "1" else 2


def _load(url: str, token: str, stop: threading.Event, acked: list[str], n: int) -> None:
    """Upload objects, record them as artifacts, register and promote, until the server dies."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=30) as c:
        i = 0
        try:
            while not stop.is_set():
                data = f"kill-{n}-{i}".encode() * (1 + (i % 7) * 50_000)
                digest = hashlib.sha256(data).hexdigest()
                c.put(f"/objects/{digest}", content=data).raise_for_status()
                acked.append(digest)
                run = c.post("/runs", json={}).json()["id"]
                c.post(
                    f"/runs/{run}/artifacts", json={"name": "m.bin", "digest": f"sha256:{digest}"}
                ).raise_for_status()
                c.post(f"/runs/{run}/end", json={}).raise_for_status()
                version = c.post("/models/k/m/versions", json={"run": run, "artifact": "m.bin"}).json()["version"]
                c.post("/models/k/m/aliases/prod", json={"version": version}).raise_for_status()
                c.post(f"/data/d{n}", json={"files": {"m.bin": f"sha256:{digest}"}}).raise_for_status()
                i += 1
        except (httpx.HTTPError, KeyError):
            return  # the server was killed under us


def test_kill_9_during_uploads_and_promotions_leaves_a_clean_vault(project: Path) -> None:
    lv(project, "init")
    with Vault.open(project) as vault:
        _, token = vault.access.create_token("k", role="maintainer")
    acked: list[str] = []
    for _ in range(KILLS):
        proc, url = start_server(project)
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(url, token, stop, acked, n)) for n in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert acked, "nothing was uploaded before the kills"
    lv(project, "fsck")
    lv(project, "audit", "verify")
    with Vault.open(project) as vault:
        missing = [d for d in acked if not vault.objects.has(Digest(d))]
    assert missing == []
