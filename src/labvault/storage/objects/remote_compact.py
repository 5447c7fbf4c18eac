"""Compaction of a remote store's packs: how deletions reach every machine (run by ``gc``).

A packed object is deleted in one process by forgetting it (``PackView.forget``); compaction makes
that true for everyone: each pack that lost records is rewritten as a new pack (its live records,
each verified, with their ages kept) plus its index, and only then is the old index deleted, then
the old pack. A reader that still knows the old pack gets "not found" for it, lists ``packs/`` again
and finds the records in the new one. A crash between the steps leaves two copies of some records
(the newest is read; the next gc deletes the other) or a pack without its index (invisible; removed
here once older than a day). A corrupt record is quarantined instead of copied.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from labvault.storage.objects.remote_packs import PackBuilder, encode_index, record_at

if TYPE_CHECKING:
    from labvault.storage.objects.remote import FsspecObjectStore

__all__ = ["compact"]


def compact(store: FsspecObjectStore) -> int:
    from labvault.storage.objects.remote import STALE_UPLOAD

    store.refresh()
    reclaimed = 0
    for pack in sorted(store.view.deleted):
        if pack in store.view.packs:
            reclaimed += _rewrite(store, pack)
    now = time.time()
    for pack, (size, mtime) in sorted(store._orphans.items()):
        if now - mtime > STALE_UPLOAD:
            with suppress(FileNotFoundError):
                store._call("removing a killed upload", store.fs.rm_file, store._pack_path(pack, "pack"))
            reclaimed += size
    return reclaimed


def _rewrite(store: FsspecObjectStore, pack: str) -> int:
    view = store.view
    live = view.digests_in(pack)
    old_size = view.packs.get(pack, 0)
    new: PackBuilder | None = None
    if live:
        try:
            data: bytes = store._call("downloading a pack", store.fs.cat_file, store._pack_path(pack, "pack"))
        except FileNotFoundError:  # compacted by another machine since the listing
            view.drop(pack)
            return 0
        new = PackBuilder()
        entries = []
        for digest, loc in sorted(live, key=lambda item: item[1].offset):
            record = record_at(data, loc.offset, digest, loc.size)
            if record is None or hashlib.sha256(record).digest() != digest:
                if record is not None:
                    store._quarantine_packed(digest.hex(), record)
                continue
            new.append(digest, record)
            entries.append((digest, new.records[-1][1], loc.size, loc.mtime))  # ages are kept
        if entries:
            store._write(store._pack_path(new.name, "pack"), bytes(new.buffer))
            index = encode_index(entries)
            store._write(store._pack_path(new.name, "idx"), index)
            view.add(new.name, len(new.buffer), entries)
            if store.cache is not None:
                store.cache.put_index(new.name, index)
        else:
            new = None
    # The old index goes first: from then on nobody discovers the old pack.
    with suppress(FileNotFoundError):
        store._call("compacting packs", store.fs.rm_file, store._pack_path(pack, "idx"))
    with suppress(FileNotFoundError):
        store._call("compacting packs", store.fs.rm_file, store._pack_path(pack, "pack"))
    view.drop(pack)
    if store.cache is not None:
        store.cache.drop_index(pack)
    return old_size - (len(new.buffer) if new is not None else 0)
