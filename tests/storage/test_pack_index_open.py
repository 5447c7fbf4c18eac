"""Opening a fresh pack index from many connections at once: the first switch to WAL is a race
SQLite answers with "database is locked" at once (no busy wait), which failed a pipeline's first stage."""

from __future__ import annotations

import threading
from pathlib import Path

from labvault.storage.objects.local import LocalObjectStore
from labvault.vault import Vault


def _first_writes_at_once(vault_dir: Path, writers: int) -> list[str]:
    stores = [LocalObjectStore(vault_dir) for _ in range(writers)]  # each its own connections, as processes
    barrier = threading.Barrier(writers)
    errors: list[str] = []

    def first_write(n: int, store: LocalObjectStore) -> None:
        barrier.wait()
        try:
            with store.batch():
                store.put_bytes(f"object {n}".encode())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=first_write, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    return errors


def test_many_first_writers_of_a_fresh_vault_at_once_all_succeed(tmp_path: Path) -> None:
    for trial in range(30):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        Vault.init(root)[0].close()
        assert _first_writes_at_once(root / ".labvault", 6) == [], trial
