"""Uploads stored in one pass (hashed once, as they are written) and composed chunks: a wrong digest
stores nothing, and a chunk corrupted in the store is found, quarantined and named."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest

from labvault.errors import CheckFailed
from labvault.refs import Digest
from labvault.services.object_streams import compose_chunks, read_object, store_upload
from labvault.vault import Vault

_BIG = 3 << 19  # over the pack limit: stored as a file of its own


def _digest(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def _blocks(data: bytes, size: int = 1 << 20) -> Callable[[], bytes]:
    parts = iter([data[i : i + size] for i in range(0, len(data), size)])
    return lambda: next(parts, b"")


def test_an_upload_is_stored_once_and_only_under_its_own_digest(vault: Vault) -> None:
    data = os.urandom(_BIG)
    with pytest.raises(CheckFailed, match="nothing was stored"):
        store_upload(vault.objects, _digest(b"other"), _blocks(data))
    assert not vault.objects.has(_digest(data))
    assert list(vault.objects.iter_temp_files()) == []
    assert store_upload(vault.objects, _digest(data), _blocks(data)) == (_digest(data), True, len(data))
    assert store_upload(vault.objects, _digest(data), _blocks(data)) == (_digest(data), False, len(data))
    assert b"".join(read_object(vault.objects, _digest(data))) == data


def test_compose_finds_and_quarantines_a_chunk_corrupted_in_the_store(vault: Vault) -> None:
    parts = [os.urandom(_BIG) for _ in range(3)]
    for p in parts:
        store_upload(vault.objects, _digest(p), _blocks(p))
    whole = b"".join(parts)
    names = [str(_digest(p)) for p in parts]
    path = vault.objects.path_of(_digest(parts[1]))  # type: ignore[attr-defined]
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # one flipped byte on disk, after the chunk was verified and stored
        f.seek(1000)
        f.write(bytes([parts[1][1000] ^ 1]))
    with pytest.raises(CheckFailed, match=f"quarantined, the first {names[1]}"):
        compose_chunks(vault.objects, _digest(whole), names)
    assert not vault.objects.has(_digest(whole))
    assert not vault.objects.has(_digest(parts[1]))  # the client's resume sends it again
    store_upload(vault.objects, _digest(parts[1]), _blocks(parts[1]))
    assert compose_chunks(vault.objects, _digest(whole), names) == (_digest(whole), True, len(whole))
    assert b"".join(read_object(vault.objects, _digest(whole))) == whole
