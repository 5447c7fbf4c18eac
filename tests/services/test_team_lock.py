"""The team vault's gc lock (a PostgreSQL advisory lock) and the store wrapper that takes it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from labvault.errors import LockedError
from labvault.storage.locked_store import LockedObjectStore
from labvault.storage.meta.repos.gc_lock import AdvisoryGcLock
from labvault.storage.meta.store import MetaStore
from labvault.storage.objects.memory import MemoryObjectStore
from labvault.vault import Vault

pytestmark = pytest.mark.postgres


@pytest.fixture
def metas(pg_url: str) -> Iterator[list[MetaStore]]:
    stores = [MetaStore(pg_url), MetaStore(pg_url)]  # two engines: two "machines"
    yield stores
    for m in stores:
        m.dispose()


def test_writers_share_the_lock_and_gc_waits_for_them(metas: list[MetaStore]) -> None:
    one, two = (AdvisoryGcLock(lambda m=m: m) for m in metas)
    with one.shared():
        with two.shared():  # writers on two machines at once
            pass
        with pytest.raises(LockedError), two.exclusive(timeout=0.3):
            pass
    with two.exclusive(timeout=5):
        with pytest.raises(LockedError), one.exclusive(timeout=0.3):
            pass
        writer_waited = threading.Event()

        def write() -> None:
            try:
                with AdvisoryGcLock(lambda: metas[0], writer_timeout=0.3).shared():
                    pass
            except LockedError:
                writer_waited.set()

        t = threading.Thread(target=write)
        t.start()
        t.join()
        assert writer_waited.is_set()  # a writer does not slip past a running gc


def test_the_shared_lock_is_reentrant_per_thread(metas: list[MetaStore]) -> None:
    lock = AdvisoryGcLock(lambda: metas[0])
    with lock.shared(), lock.shared():
        pass
    with lock.exclusive(timeout=1):  # released by the outer exit, not held forever by the inner one
        pass


def test_a_batch_on_the_locked_store_holds_gc_off(metas: list[MetaStore]) -> None:
    store = LockedObjectStore(MemoryObjectStore(), AdvisoryGcLock(lambda: metas[0]))
    other = LockedObjectStore(MemoryObjectStore(), AdvisoryGcLock(lambda: metas[1]))
    with store.batch():
        digest = store.put_bytes(b"x")
        with pytest.raises(LockedError), other.gc_lock(timeout=0.3):
            pass
    with other.gc_lock(timeout=1):
        pass
    assert store.get_bytes(digest) == b"x"


def test_a_postgresql_vault_builds_the_locked_store(project: Path, pg_url: str) -> None:
    vault, _ = Vault.init(project, database_url=pg_url)
    with vault:
        assert isinstance(vault.objects, LockedObjectStore)
        digest = vault.objects.put_bytes(b"team")
        report = vault.maintenance.gc(grace=0, lock_timeout=5)
        assert digest in report.deleted  # unreferenced, and gc took the advisory lock to find out
