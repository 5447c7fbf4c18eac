"""Upload sessions through the real server: pieces written at their offsets into one temp file,
verified at commit, renamed into place; resumable, swept when abandoned. On the team vault's object
storage the server offers none and the client sends chunks and composes them."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from labvault.client.objects import HttpObjectStore
from labvault.client.settings import ServerTarget
from labvault.client.transport import Transport
from labvault.errors import ExternalError, ValidationError
from tests.server.conftest import Served, error_of, lv

PIECE = 64 << 10


def _local(served: Served) -> None:
    if served.backend == "team":
        pytest.skip("the team vault's object storage takes no upload sessions (the client composes there)")


def _begin(served: Served, data: bytes, digest: str | None = None, role: str = "writer") -> str:
    answer = served.client(role).post(
        f"/objects/sha256:{digest or hashlib.sha256(data).hexdigest()}/uploads", json={"size": len(data)}
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["received"] == []
    assert body["size"] == len(data)
    return str(body["upload"])


def _put(served: Served, upload: str, data: bytes, offset: int) -> dict[str, Any]:
    answer = served.client("writer").put(f"/objects/uploads/{upload}", params={"offset": offset}, content=data)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _raw_put(served: Served, upload: str, length: int, body: bytes, *, offset: int = 0) -> bytes:
    """A PUT that announces ``length`` bytes, sends ``body``, and hangs up; the first bytes of the answer."""
    url = urlsplit(served.urls[0])
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (
            f"PUT /api/v1/objects/uploads/{upload}?offset={offset} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {served.tokens['writer']}\r\nContent-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        sock.settimeout(1.0)  # the server reads what was sent (what it holds unread when the client goes is lost)
        try:
            return sock.recv(100)
        except TimeoutError:
            return b""


def _uploads_in_tmp(served: Served) -> list[str]:
    return sorted(p.name for p in (served.root / ".labvault" / "tmp").iterdir() if p.name.startswith("upload-"))


def test_pieces_in_order_are_stored_once_verified_and_renamed_into_place(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(40 * PIECE + 17)  # over 1 MiB: a file of its own, not packed
    digest = hashlib.sha256(data).hexdigest()
    upload = _begin(served, data)
    for offset in range(0, len(data), 8 * PIECE):
        held = _put(served, upload, data[offset : offset + 8 * PIECE], offset)
    assert held["received"] == [[0, len(data)]]
    assert served.client("reader").head(f"/objects/sha256:{digest}").status_code == 404  # nothing visible yet
    done = served.client("writer").post(f"/objects/uploads/{upload}/commit")
    assert done.status_code == 201, done.text
    assert done.json() == {"digest": f"sha256:{digest}", "size": len(data), "created": True}
    assert served.client("reader").get(f"/objects/sha256:{digest}").content == data
    stored = served.root / ".labvault" / "objects" / "sha256" / digest[:2] / digest[2:]
    assert stored.stat().st_mode & 0o777 == 0o444
    assert _uploads_in_tmp(served) == []
    error_of(served.client("writer").get(f"/objects/uploads/{upload}"), 404, 3)  # the session ended


def test_pieces_out_of_order_and_resent_are_hashed_at_commit(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(4 * PIECE + 5)
    upload = _begin(served, data)
    offsets = list(range(0, len(data), PIECE))
    for offset in reversed(offsets):
        _put(served, upload, data[offset : offset + PIECE], offset)
    _put(served, upload, data[100 : 3 * PIECE], 100)  # a resend that overlaps what arrived in order
    done = served.client("writer").post(f"/objects/uploads/{upload}/commit")
    assert done.status_code == 201, done.text
    assert served.client("reader").get(f"/objects/sha256:{hashlib.sha256(data).hexdigest()}").content == data


def test_a_piece_cut_mid_body_keeps_what_arrived_and_the_upload_resumes(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(3 * PIECE)
    upload = _begin(served, data)
    _put(served, upload, data[:PIECE], 0)
    # A client that dies mid-piece: it announced the whole of the rest, sent half of it, and hung up.
    _raw_put(served, upload, 2 * PIECE, data[PIECE : 2 * PIECE], offset=PIECE)
    held: list[list[int]] = []
    for _ in range(100):  # the server notices the cut and records what it wrote
        held = served.client("writer").get(f"/objects/uploads/{upload}").json()["received"]
        if held == [[0, 2 * PIECE]]:
            break
        threading.Event().wait(0.05)
    assert held == [[0, 2 * PIECE]]
    error_of(served.client("writer").post(f"/objects/uploads/{upload}/commit"), 400, 2)  # not all there
    _put(served, upload, data[2 * PIECE :], 2 * PIECE)
    assert served.client("writer").post(f"/objects/uploads/{upload}/commit").status_code == 201
    assert served.client("reader").get(f"/objects/sha256:{hashlib.sha256(data).hexdigest()}").content == data


def test_bytes_that_do_not_hash_to_the_digest_are_refused_and_nothing_is_visible(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(2 * PIECE)
    claimed = hashlib.sha256(b"something else").hexdigest()
    upload = _begin(served, data, claimed)
    _put(served, upload, data, 0)
    refused = error_of(served.client("writer").post(f"/objects/uploads/{upload}/commit"), 422, 1)
    assert "nothing was stored" in str(refused["error"])
    for digest in (claimed, hashlib.sha256(data).hexdigest()):
        assert served.client("reader").head(f"/objects/sha256:{digest}").status_code == 404
    error_of(served.client("writer").get(f"/objects/uploads/{upload}"), 404, 3)
    assert _uploads_in_tmp(served) == []


def test_concurrent_sessions_for_one_digest_both_commit(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(24 * PIECE)  # a file of its own: two renames of the same bytes
    digest = hashlib.sha256(data).hexdigest()
    first, second = _begin(served, data), _begin(served, data)
    assert first != second
    answers: list[int] = []

    def upload(session: str) -> None:
        for offset in range(0, len(data), PIECE):
            _put(served, session, data[offset : offset + PIECE], offset)
        answers.append(served.client("writer").post(f"/objects/uploads/{session}/commit").status_code)

    threads = [threading.Thread(target=upload, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 2
    assert set(answers) <= {200, 201}  # 200 when the other had committed first
    assert served.client("reader").get(f"/objects/sha256:{digest}").content == data
    assert _uploads_in_tmp(served) == []


def test_an_abandoned_session_is_swept_by_gc(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(2 * PIECE)
    upload = _begin(served, data)
    _put(served, upload, data[:PIECE], 0)  # then the client is killed
    lv(served.root, "gc")  # within the grace period: a live upload is kept
    assert served.client("writer").get(f"/objects/uploads/{upload}").json()["received"] == [[0, PIECE]]
    lv(served.root, "gc", "--grace", "0")
    assert _uploads_in_tmp(served) == []
    error_of(served.client("writer").get(f"/objects/uploads/{upload}"), 404, 3)
    error_of(served.client("writer").put(f"/objects/uploads/{upload}", content=data[PIECE:]), 404, 3)


def test_sessions_check_roles_bounds_and_ids(served: Served) -> None:
    _local(served)
    data = secrets.token_bytes(PIECE)
    digest = hashlib.sha256(data).hexdigest()
    reader = served.client("reader")
    assert reader.post(f"/objects/sha256:{digest}/uploads", json={"size": len(data)}).status_code == 403
    upload = _begin(served, data)
    assert reader.put(f"/objects/uploads/{upload}", content=data).status_code == 403
    assert reader.post(f"/objects/uploads/{upload}/commit").status_code == 403
    assert reader.get(f"/objects/uploads/{upload}").status_code == 403
    writer = served.client("writer")
    error_of(writer.put(f"/objects/uploads/{upload}", params={"offset": 1}, content=data), 400, 2)  # past the end
    error_of(writer.put(f"/objects/uploads/{upload}", params={"offset": len(data) + 1}, content=b"x"), 400, 2)
    assert _raw_put(served, upload, (1 << 30) + 1, b"").startswith(b"HTTP/1.1 413 ")  # refused before it is sent
    error_of(writer.put("/objects/uploads/..%2F..%2Fconfig.json", content=b"x"), 404, 3)
    error_of(writer.get(f"/objects/uploads/{'0' * 32}"), 404, 3)
    error_of(writer.post(f"/objects/sha256:{digest}/uploads", json={"size": -1}), 400, 2)
    assert writer.delete(f"/objects/uploads/{upload}").status_code == 204
    error_of(writer.post(f"/objects/uploads/{upload}/commit"), 404, 3)


def test_the_client_resumes_an_interrupted_upload_from_what_the_server_holds(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = secrets.token_bytes(10 * PIECE + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with Transport(ServerTarget(served.urls[0], served.tokens["writer"])) as transport:
        store = HttpObjectStore(transport, cache_dir=tmp_path / "cache", chunk_size=PIECE, piece_size=PIECE)
        real = transport.request

        def flaky(method: str, route: str, **kw: Any) -> Any:
            if method == "PUT" and store.uploads > 4:
                raise ExternalError("connection lost")
            return real(method, route, **kw)

        monkeypatch.setattr(transport, "request", flaky)
        with pytest.raises(ExternalError):
            store.put_file(path)
        monkeypatch.setattr(transport, "request", real)
        # Another process (its own store) resumes: it sends only what the server lacks.
        again = HttpObjectStore(transport, cache_dir=tmp_path / "cache", chunk_size=PIECE, piece_size=PIECE)
        digest = again.put_file(path)
        assert again.uploads == 11 - 4
        assert again.get_bytes(digest) == data
        again.uploads = 0
        assert again.put_file(path) == digest
        assert again.uploads == 0  # stored already: nothing sent
    log = served.procs[0].log_path.read_text()  # type: ignore[attr-defined]
    route = f"/api/v1/objects/{digest.hex}/compose"
    assert (route in log) == (served.backend == "team")  # object storage: chunks, then compose


def test_a_file_that_changes_while_it_is_sent_is_refused_and_nothing_is_stored(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(secrets.token_bytes(4 * PIECE))
    with Transport(ServerTarget(served.urls[0], served.tokens["writer"])) as transport:
        store = HttpObjectStore(transport, cache_dir=tmp_path / "cache", chunk_size=PIECE, piece_size=PIECE)
        real = transport.request
        digest = hashlib.sha256(path.read_bytes()).hexdigest()

        def rewrite_once_sending(method: str, route: str, **kw: Any) -> Any:
            if method == "PUT" and store.uploads == 1:  # the first piece is on its way: the rest changes
                with path.open("r+b") as f:
                    f.seek(3 * PIECE)
                    f.write(b"changed")
            return real(method, route, **kw)

        monkeypatch.setattr(transport, "request", rewrite_once_sending)
        with pytest.raises(ValidationError, match="changed while it was being uploaded"):
            store.put_file(path)
    assert served.client("reader").head(f"/objects/sha256:{digest}").status_code == 404


def test_the_team_vault_answers_no_session(served: Served) -> None:
    if served.backend != "team":
        pytest.skip("a local store takes sessions")
    answer = served.client("writer").post(f"/objects/sha256:{'ab' * 32}/uploads", json={"size": 10})
    assert answer.status_code == 200
    assert answer.json() == {"upload": None}


def test_an_older_client_still_composes_chunks(served: Served) -> None:
    data = secrets.token_bytes(3 * PIECE)
    names = []
    for offset in range(0, len(data), PIECE):
        chunk = data[offset : offset + PIECE]
        names.append(f"sha256:{hashlib.sha256(chunk).hexdigest()}")
        assert served.client("writer").put(f"/objects/{names[-1]}", content=chunk).status_code in (200, 201)
    digest = hashlib.sha256(data).hexdigest()
    done = served.client("writer").post(f"/objects/sha256:{digest}/compose", json={"chunks": names})
    assert done.status_code == 201, done.text
    assert served.client("reader").get(f"/objects/sha256:{digest}").content == data


def test_data_add_sends_a_large_file_in_one_session_through_the_cli(served: Served, tmp_path: Path) -> None:
    from tests.server.test_client_data import client_env, run

    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    big = secrets.token_bytes((8 << 20) + 4097)  # over the client's 8 MiB: sent in pieces
    (user / "data" / "big.bin").write_bytes(big)
    env = client_env(tmp_path / "home", served.urls[0], served.tokens["writer"])
    name = f"big-{secrets.token_hex(3)}"
    run(user, env, "data", "add", name, "data")
    (user / "data" / "big.bin").unlink()
    run(user, env, "data", "checkout", name, "data")
    assert (user / "data" / "big.bin").read_bytes() == big
    lines = [json.loads(x) for p in served.procs for x in p.log_path.read_text().splitlines() if x.startswith("{")]  # type: ignore[attr-defined]
    digest = hashlib.sha256(big).hexdigest()
    opened = [x["status"] for x in lines if x.get("path") == f"/api/v1/objects/{digest}/uploads"]
    composed = [x["status"] for x in lines if x.get("path") == f"/api/v1/objects/{digest}/compose"]
    if served.backend == "team":  # object storage: no session, chunks and compose
        assert (opened, composed) == ([200], [201])
    else:
        assert (opened, composed) == ([201], [])
    kept = tmp_path / "home" / ".cache" / "labvault" / "uploads"
    assert not kept.exists() or list(kept.iterdir()) == []  # the session's id is forgotten once committed
