"""The server's services without HTTP: tokens (salted hashes, roles, expiry), idempotent requests,
verified uploads, composed chunks, ranges, and snapshots made of stored objects."""

from __future__ import annotations

import hashlib
import threading

import pytest
import sqlalchemy as sa

from labvault.entities import utcnow
from labvault.entities.access import ApiToken, role_allows
from labvault.errors import CheckFailed, Conflict, NotAllowed, NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.access import Access
from labvault.services.object_streams import compose_chunks, store_upload
from labvault.services.transfer import read_range
from labvault.storage.meta.tables.access import server_tokens
from labvault.vault import Vault


def _store(vault: Vault, claimed: Digest, data: bytes) -> tuple[Digest, bool]:
    blocks = iter([data[i : i + 4096] for i in range(0, len(data), 4096)])
    digest, created, size = store_upload(vault.objects, claimed, lambda: next(blocks, b""))
    assert size == len(data)
    return digest, created


def _digest(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def test_tokens_are_stored_salted_and_hashed(any_vault: Vault) -> None:
    token, text = any_vault.access.create_token("alice@example.com", role="writer", expires_days=30)
    secret = text.split("_", 2)[2]
    with any_vault.meta.read() as conn:
        row = conn.execute(sa.select(server_tokens)).one()
    assert secret not in str(tuple(row))
    assert row.hash == hashlib.sha256((row.salt + secret).encode()).hexdigest()
    assert any_vault.access.authenticate(text).user == "alice@example.com"
    _, other = any_vault.access.create_token("alice@example.com", role="writer")
    with any_vault.meta.read() as conn:
        salts = {r.salt for r in conn.execute(sa.select(server_tokens.c.salt))}
    assert len(salts) == 2
    assert other != text
    assert token.expires_at is not None


def test_authenticate_refuses_what_is_not_an_active_token(any_vault: Vault) -> None:
    access = any_vault.access
    for text in (None, "", "lvt_", "nonsense", "lvt_0123456789ab_" + "A" * 43):
        with pytest.raises(NotAllowed) as err:
            access.authenticate(text)
        assert err.value.status == 401
        assert err.value.exit_code == 8
    token, text = access.create_token("bob", role="reader")
    access.revoke_token(token.id)
    with pytest.raises(NotAllowed, match="revoked"):
        access.authenticate(text)


def test_roles_are_ordered() -> None:
    assert role_allows("admin", "maintainer")
    assert role_allows("writer", "writer")
    assert not role_allows("reader", "writer")
    assert not role_allows("boss", "reader")
    writer = ApiToken("x", "u", "writer", utcnow(), "u", None, None)
    with pytest.raises(NotAllowed) as err:
        Access.require(writer, "maintainer")
    assert err.value.status == 403


def test_once_runs_the_work_once_per_key_and_again_after_a_failure(any_vault: Vault) -> None:
    calls: list[int] = []

    def work() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    once = any_vault.access.once
    assert once("u:run:1", "k", work, encode=lambda x: x) == {"n": 1}
    assert once("u:run:1", "k", work, encode=lambda x: x) == {"n": 1}
    assert once("u:run:2", "k", work, encode=lambda x: x) == {"n": 2}  # another scope
    assert len(calls) == 2

    def failing() -> dict[str, int]:
        raise Conflict("no")

    with pytest.raises(Conflict):
        once("u:run:1", "f", failing, encode=lambda x: x)
    assert once("u:run:1", "f", work, encode=lambda x: x) == {"n": 3}  # the failed claim was released
    with pytest.raises(ValidationError):
        once("u:run:1", "bad key", work, encode=lambda x: x)


def test_once_refuses_a_retry_while_the_first_still_runs(vault: Vault) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> dict[str, int]:
        started.set()
        release.wait(10)
        return {"n": 1}

    thread = threading.Thread(target=lambda: vault.access.once("s", "k", slow, encode=lambda x: x))
    thread.start()
    assert started.wait(10)
    with pytest.raises(Conflict, match="still running"):
        vault.access.once("s", "k", slow, encode=lambda x: x)
    release.set()
    thread.join()


def test_store_upload_verifies_before_storing(vault: Vault) -> None:
    data = b"payload" * 1000
    with pytest.raises(CheckFailed, match="nothing was stored"):
        _store(vault, _digest(b"other"), data)
    assert not vault.objects.has(_digest(data))
    assert _store(vault, _digest(data), data) == (_digest(data), True)
    assert _store(vault, _digest(data), data) == (_digest(data), False)


def test_compose_and_ranges(vault: Vault) -> None:
    parts = [bytes([i]) * 70_000 for i in range(5)]
    for p in parts:
        _store(vault, _digest(p), p)
    whole = b"".join(parts)
    names = [str(_digest(p)) for p in parts]
    with pytest.raises(CheckFailed):
        compose_chunks(vault.objects, _digest(b"x"), names)
    with pytest.raises(NotFound):
        compose_chunks(vault.objects, _digest(whole), [*names, str(_digest(b"absent"))])
    assert compose_chunks(vault.objects, _digest(whole), names) == (_digest(whole), True, len(whole))
    assert b"".join(read_range(vault.objects, _digest(whole), 69_990, 140_009)) == whole[69_990:140_010]
    assert b"".join(read_range(vault.objects, _digest(whole), 0, len(whole) - 1)) == whole


def test_snapshot_of_stored_objects(vault: Vault) -> None:
    csv, text = b"x,y\n1,2\n", b"notes"
    for data in (csv, text):
        _store(vault, _digest(data), data)
    files = {"data/a.csv": _digest(csv), "notes.txt": _digest(text)}
    snapshot, created = vault.data.add_objects("up", files, message="m")
    assert created
    assert snapshot.file_count == 2
    assert snapshot.record_count == 1
    assert {f.path: f.sha256 for f in vault.data.get("data:up@v1").files} == files
    assert vault.data.add_objects("up", files)[1] is False
    for bad in ("../a", "/a", "a/../b", "a\\b", "", "a//b"):
        with pytest.raises(ValidationError):
            vault.data.add_objects("up", {bad: _digest(text)})
    with pytest.raises(NotFound):
        vault.data.add_objects("up", {"z": _digest(b"never stored")})
    report = vault.maintenance.fsck()
    assert not report.corrupt
    assert not report.missing
    assert not report.problems


def test_a_claim_left_by_a_dead_server_is_taken_over(any_vault: Vault) -> None:
    from datetime import timedelta

    from labvault.storage.meta.tables.access import server_requests

    def never() -> dict[str, int]:
        raise AssertionError("not while the claim is fresh")

    once = any_vault.access.once
    with any_vault.meta.transaction() as conn:  # a server claimed the key, then died
        conn.execute(
            sa.insert(server_requests).values(scope="s", key="k", state="pending", result=None, created_at=utcnow())
        )
    with pytest.raises(Conflict):
        once("s", "k", never, encode=lambda x: x)
    with any_vault.meta.transaction() as conn:
        conn.execute(sa.update(server_requests).values(created_at=utcnow() - timedelta(minutes=3)))
    assert once("s", "k", lambda: {"n": 1}, encode=lambda x: x) == {"n": 1}
    assert once("s", "k", never, encode=lambda x: x) == {"n": 1}
