"""Uploads are stored by threads of their own: clients that send their bodies slowly never take the
threads every other request needs."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx

from labvault.server.app import REQUEST_THREADS
from tests.server.conftest import Served


def test_slow_uploads_leave_the_other_requests_their_threads(served: Served) -> None:
    release = threading.Event()
    data = b"slow" * (1 << 18)  # 1 MiB: the first half is sent, then the client waits
    digest = hashlib.sha256(data).hexdigest()
    answers: list[int] = []

    def body() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        release.wait(60)
        yield data[len(data) // 2 :]

    def upload() -> None:
        headers = {"Authorization": f"Bearer {served.tokens['writer']}", "Content-Length": str(len(data))}
        with httpx.Client(base_url=served.urls[0] + "/api/v1", headers=headers, timeout=90) as c:
            answers.append(c.put(f"/objects/sha256:{digest}", content=body()).status_code)

    uploads = [threading.Thread(target=upload) for _ in range(REQUEST_THREADS + 2)]
    for t in uploads:
        t.start()
    try:
        time.sleep(1.0)  # every upload has sent its first half and waits
        started = time.monotonic()
        assert served.client("reader").get("/runs", params={"limit": 1}, timeout=20).status_code == 200
        assert time.monotonic() - started < 10
    finally:
        release.set()
        for t in uploads:
            t.join(90)
    assert len(answers) == len(uploads)
    assert set(answers) <= {200, 201}
    assert served.client("reader").get(f"/objects/sha256:{digest}").content == data
