"""Upload sessions of the local store: what a commit trusts, and what it checks again.

(Through the real server: tests/server/test_upload_sessions.py.)"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from labvault.errors import CheckFailed, LockedError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.uploads import UploadSessions


def _blocks(data: bytes, size: int = 1 << 20) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _reader(parts: list[bytes]) -> Callable[[], bytes]:
    """A body's ``read()`` over ``parts``, ``b""`` at the end."""
    it = iter(parts)
    return lambda: next(it, b"")


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore.create(tmp_path / "vault")


def test_a_write_from_another_process_inside_what_was_hashed_is_caught(store: LocalObjectStore) -> None:
    data = secrets.token_bytes(3 << 20)
    digest = Digest(hashlib.sha256(data).hexdigest())
    here = store.upload_sessions
    session = here.begin(digest, len(data))
    here.write(session.id, 0, _reader(_blocks(data)))  # in order: hashed as it was written, here
    other = UploadSessions(store)  # another server process: its own in-order hashes
    other.write(session.id, 0, _reader([b"X" * 10]))  # changes bytes this process already hashed
    with pytest.raises(CheckFailed, match="nothing was stored"):
        here.commit(session.id)  # the file is hashed again: its in-order hash no longer names it
    assert not store.has(digest)


def test_pieces_out_of_order_through_two_processes_commit(store: LocalObjectStore) -> None:
    data = secrets.token_bytes((3 << 20) + 5)
    digest = Digest(hashlib.sha256(data).hexdigest())
    here, other = store.upload_sessions, UploadSessions(store)
    session = here.begin(digest, len(data))
    here.write(session.id, 1 << 20, _reader([data[1 << 20 :]]))
    other.write(session.id, 0, _reader([data[: 1 << 20]]))
    assert here.status(session.id).received == ((0, len(data)),)
    assert here.commit(session.id) == (digest, True, len(data))
    assert store.get_bytes(digest) == data
    assert not [p for p in store.tmp_dir.iterdir() if p.name.startswith("upload-")]


def test_the_log_is_untrusted_input(store: LocalObjectStore) -> None:
    data = secrets.token_bytes(2 << 20)
    session = store.upload_sessions.begin(Digest(hashlib.sha256(data).hexdigest()), len(data))
    store.upload_sessions.write(session.id, 0, _reader([data[:100]]))
    log = store.tmp_dir / f"upload-{session.id}.log"
    with log.open("a") as f:  # a record past the end, garbage, and a torn last line
        f.write(f"0 {len(data) + 1} {'a' * 16}\n../../etc 5 x\n{1 << 20} 10")
    assert store.upload_sessions.status(session.id).received == ((0, 100),)
    with pytest.raises(ValidationError, match="lacks bytes from offset 100"):
        store.upload_sessions.commit(session.id)
    log.write_text("not a session\n")
    with pytest.raises(NotFound):
        store.upload_sessions.status(session.id)
    for bad in ("../../config", "A" * 32, ""):
        with pytest.raises(NotFound):
            store.upload_sessions.status(bad)


def test_commit_waits_for_no_piece_in_flight(store: LocalObjectStore) -> None:
    data = secrets.token_bytes(2 << 20)
    session = store.upload_sessions.begin(Digest(hashlib.sha256(data).hexdigest()), len(data))
    store.upload_sessions.write(session.id, 0, _reader([data]))
    fd = os.open(store.tmp_dir / f"upload-{session.id}.log", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a piece being written, by another process
        with pytest.raises(LockedError):
            store.upload_sessions.commit(session.id)
    finally:
        os.close(fd)
    assert store.upload_sessions.commit(session.id)[1] is True


def test_a_piece_past_the_end_is_refused_and_what_fit_is_kept(store: LocalObjectStore) -> None:
    data = secrets.token_bytes(2 << 20)
    session = store.upload_sessions.begin(Digest(hashlib.sha256(data).hexdigest()), len(data))
    with pytest.raises(ValidationError, match="past the end"):
        store.upload_sessions.write(session.id, 0, _reader([*_blocks(data), b"extra"]))
    assert store.upload_sessions.status(session.id).received == ((0, len(data)),)
    assert store.upload_sessions.commit(session.id)[0].hex == hashlib.sha256(data).hexdigest()
