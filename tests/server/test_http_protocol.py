"""The server's HTTP protocol (server/http_protocol.py): request bodies handed over piece by piece.

Raw sockets against the real server, for what an HTTP client library smooths over: a body sent in
small writes with pauses, a body larger than the read-pause mark, ``Expect: 100-continue``,
pipelined requests, and a client gone mid-body. The module's teardown fails on any traceback in
the server's log."""

from __future__ import annotations

import hashlib
import socket
import time
from urllib.parse import urlsplit

import pytest
import uvicorn
from uvicorn.importer import import_from_string

from labvault.cli.server import HTTP_PROTOCOL
from labvault.server import http_protocol
from tests.server.conftest import Served

TEAM_BY_DEFAULT = False  # the protocol is the same whatever the vault behind it


def _connect(served: Served) -> socket.socket:
    url = urlsplit(served.urls[0])
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(served: Served, data: bytes, *extra: str) -> bytes:
    lines = [
        f"PUT /api/v1/objects/sha256:{hashlib.sha256(data).hexdigest()} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {served.tokens['writer']}",
        f"Content-Length: {len(data)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` responses read off ``sock``: (status, body) each."""
    got = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in got:
            more = sock.recv(65536)
            if not more:
                raise AssertionError(f"connection closed after {len(out)} responses: {got!r}")
            got += more
        head, _, got = got.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        while len(got) < length:
            got += sock.recv(65536)
        out.append((status, got[:length]))
        got = got[length:]
    return out


def _stored(served: Served, data: bytes) -> bool:
    r = served.client("reader").get(f"/objects/{hashlib.sha256(data).hexdigest()}")
    return r.status_code == 200 and r.content == data


def test_the_server_runs_the_pieces_protocol() -> None:
    """Were uvicorn upgraded past the releases it was checked against, the server would fall back to
    uvicorn's own protocol; this says when that happens."""
    assert http_protocol.usable(), f"uvicorn {uvicorn.__version__} is not among {http_protocol.CHECKED}"
    assert import_from_string(HTTP_PROTOCOL) is http_protocol.PiecesProtocol


def test_another_uvicorn_release_gets_uvicorns_own_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn, "__version__", "9.0.0")
    assert not http_protocol.usable()


def test_a_body_sent_in_small_writes_with_pauses_arrives_whole(served: Served) -> None:
    data = bytes(range(256)) * 2000
    with _connect(served) as sock:
        sock.sendall(_head(served, data))
        for at in range(0, len(data), 50_000):
            sock.sendall(data[at : at + 50_000])
            time.sleep(0.01)
        assert _responses(sock, 1)[0][0] == 201
    assert _stored(served, data)


def test_a_body_over_the_pause_mark_arrives_whole(served: Served) -> None:
    data = hashlib.sha256(b"seed").digest() * ((3 * http_protocol.HIGH_WATER) // 32 + 7)
    with _connect(served) as sock:
        sock.sendall(_head(served, data) + data)
        assert _responses(sock, 1)[0][0] == 201
    assert _stored(served, data)


def test_expect_100_continue_is_answered_before_the_body(served: Served) -> None:
    data = b"sent only once the server said continue"
    with _connect(served) as sock:
        sock.sendall(_head(served, data, "Expect: 100-continue"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(data)
        assert _responses(sock, 1)[0][0] == 201
    assert _stored(served, data)


def test_pipelined_requests_are_each_answered_in_order(served: Served) -> None:
    first, second = b"the first of two" * 1000, b"the second of two" * 1000
    with _connect(served) as sock:
        sock.sendall(_head(served, first) + first + _head(served, second) + second)
        assert [status for status, _ in _responses(sock, 2)] == [201, 201]
    assert _stored(served, first)
    assert _stored(served, second)


def test_a_client_gone_mid_body_stores_nothing_and_the_server_goes_on(served: Served) -> None:
    data = b"x" * (2 << 20)
    with _connect(served) as sock:
        sock.sendall(_head(served, data) + data[: 1 << 20])
    time.sleep(0.3)
    assert served.client("reader").head(f"/objects/{hashlib.sha256(data).hexdigest()}").status_code == 404
    good = b"after the one that went away"
    with _connect(served) as sock:
        sock.sendall(_head(served, good) + good)
        assert _responses(sock, 1)[0][0] == 201
