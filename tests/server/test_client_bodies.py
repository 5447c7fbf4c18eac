"""Large request bodies from the client: handed to httpx in views (client/transport.py ``_Slices``),
sent with their length, whole again on a retry; and an upload session's pieces read one ahead of
the one being sent (client/uploads.py)."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from labvault.client.objects import HttpObjectStore
from labvault.client.settings import ServerTarget
from labvault.client.transport import Transport
from labvault.client.uploads import upload_file, upload_stream
from labvault.errors import ValidationError
from labvault.refs import Digest
from tests.server.conftest import Served

TEAM_BY_DEFAULT = False  # the client's side: the same whatever the vault behind the server


class _Answering(httpx.BaseTransport):
    """Answers with ``answer(request)``; unlike httpx's MockTransport, leaves the body unread."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.answer(request)


def _mocked(answer: Callable[[httpx.Request], httpx.Response]) -> Transport:
    transport = Transport(ServerTarget("http://server.invalid", "t"), retry_for=10)
    transport._client = httpx.Client(base_url="http://server.invalid/api/v1", transport=_Answering(answer))
    transport._checked = True
    return transport


def test_a_large_body_goes_with_its_length_and_whole_again_on_a_retry() -> None:
    data = random.Random(1).randbytes(5 << 20)
    seen: list[tuple[dict[str, str], bytes]] = []
    largest: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        parts = [bytes(p) for p in request.stream]  # type: ignore[union-attr]  # as the connection gets them
        largest.append(max(map(len, parts)))
        seen.append((dict(request.headers), b"".join(parts)))
        return httpx.Response(503 if len(seen) == 1 else 201, json={})

    with _mocked(answer) as transport:
        transport.request("PUT", "/objects/x", content=data)
    assert len(seen) == 2  # 503, retried
    for headers, body in seen:
        assert headers["content-length"] == str(len(data))
        assert "transfer-encoding" not in headers
        assert body == data
    assert max(largest) <= 1 << 20  # in views: httpcore copies the rest of a part after each send


def test_pieces_read_ahead_arrive_whole_and_in_place(served: Served, tmp_path: Path) -> None:
    data = random.Random(2).randbytes(5 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = Digest(hashlib.sha256(data).hexdigest())
    with Transport(ServerTarget(served.urls[0], served.tokens["writer"])) as transport:
        upload_file(
            transport,
            digest,
            path,
            chunk_size=1 << 20,
            piece_size=1 << 20,  # five pieces: four read while another is sent
            state_dir=tmp_path / "state",
            sent=lambda: None,
        )
        store = HttpObjectStore(transport, cache_dir=tmp_path / "cache")
        assert store.get_bytes(digest) == data


@pytest.mark.parametrize("extra", [-1, 1], ids=["short", "long"])
def test_a_stream_not_of_its_size_is_refused_before_the_commit(served: Served, tmp_path: Path, extra: int) -> None:
    size = 3 << 20
    data = random.Random(3).randbytes(size + extra)
    digest = Digest(hashlib.sha256(data[:size]).hexdigest())

    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        yield io.BytesIO(data)

    with Transport(ServerTarget(served.urls[0], served.tokens["writer"])) as transport:
        with pytest.raises(ValidationError, match="not its size"):
            upload_stream(
                transport,
                digest,
                size,
                opener,
                chunk_size=1 << 20,
                piece_size=1 << 20,
                state_dir=tmp_path / "state",
                sent=lambda: None,
                mismatch=lambda: ValidationError("not its size", hint="-"),
            )
        assert not HttpObjectStore(transport, cache_dir=tmp_path / "cache").has(digest)
