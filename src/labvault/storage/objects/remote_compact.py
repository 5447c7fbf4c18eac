"""Compaction of a remote store's packs: how deletions reach every machine (run by ``gc``).

A packed object is deleted in one process by forgetting it (``PackView.forget``); compaction makes
that true for everyone: each pack that lost records is rewritten as a new pack (its live records,
each verified, with their ages kept) plus its index, and only then is the old index deleted, then
the old pack. A reader that still knows the old pack gets "not found" for it, lists ``packs/`` again
and finds the records in the new one. A crash between the steps leaves two copies of some records
(the newest is read; the next gc deletes the other) or a pack without its index (invisible; removed
here once older than a day). A corrupt record is quarantined instead of copied. Small packs (one per
batch of a few objects) are merged the same way once there are many, so that readers have fewer index
objects to list and read.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from labvault.storage.objects.remote_packs import Entry, PackBuilder, encode_index, record_at

if TYPE_CHECKING:
    from labvault.storage.objects.remote import FsspecObjectStore

__all__ = ["compact"]


STALE_UPLOAD = 24 * 3600.0  # a pack with no index this old was left by a killed upload: compact removes it
SMALL_PACK = 4 * 1024 * 1024  # packs smaller than this are merged ...
MERGE_AT = 16  # ... once there are this many: fewer index objects for every reader to list and read


def compact(store: FsspecObjectStore) -> int:
    store.refresh()
    view = store.view
    with view.lock:
        doomed = {p for p in view.deleted if p in view.packs}
        small = [p for p, size in view.packs.items() if size < SMALL_PACK and p not in doomed]
    if len(small) >= MERGE_AT:
        doomed.update(small)
    reclaimed = _rewrite(store, sorted(doomed)) if doomed else 0
    now = time.time()
    for pack, (size, mtime) in sorted(store._orphans.items()):
        if now - mtime > STALE_UPLOAD:
            with suppress(FileNotFoundError):
                store._call("removing a killed upload", store.fs.rm_file, store._pack_path(pack, "pack"))
            reclaimed += size
    return reclaimed


def _rewrite(store: FsspecObjectStore, packs: list[str]) -> int:
    """Copy the live records of ``packs`` into new packs, then delete them; the bytes reclaimed."""
    view = store.view
    old_size = 0
    new: list[tuple[PackBuilder, list[Entry]]] = []
    copied: set[bytes] = set()
    gone: list[str] = []
    for pack in packs:
        live = view.digests_in(pack)
        old_size += view.packs.get(pack, 0)
        gone.append(pack)
        if not live:
            continue
        try:
            data: bytes = store._call("downloading a pack", store.fs.cat_file, store._pack_path(pack, "pack"))
        except FileNotFoundError:  # compacted by another machine since the listing
            view.drop(pack)
            gone.pop()
            continue
        for digest, loc in sorted(live, key=lambda item: item[1].offset):
            if digest in copied:
                continue
            record = record_at(data, loc.offset, digest, loc.size)
            if record is None or hashlib.sha256(record).digest() != digest:
                if record is not None:
                    store._quarantine_packed(digest.hex(), record)
                continue
            if not new or new[-1][0].full():
                new.append((PackBuilder(), []))
            builder, entries = new[-1]
            builder.append(digest, record)
            newest = view.lookup(digest) or loc  # ages are kept: the newest copy's
            entries.append((digest, builder.records[-1][1], loc.size, max(loc.mtime, newest.mtime)))
            copied.add(digest)
    new_size = 0
    for builder, entries in new:
        store._write(store._pack_path(builder.name, "pack"), bytes(builder.buffer))
        index = encode_index(entries)
        store._write(store._pack_path(builder.name, "idx"), index)
        view.add(builder.name, len(builder.buffer), entries)
        new_size += len(builder.buffer)
        if store.cache is not None:
            store.cache.put_index(builder.name, index)
    for pack in gone:
        # The old index goes first: from then on nobody discovers the old pack.
        with suppress(FileNotFoundError):
            store._call("compacting packs", store.fs.rm_file, store._pack_path(pack, "idx"))
        with suppress(FileNotFoundError):
            store._call("compacting packs", store.fs.rm_file, store._pack_path(pack, "pack"))
        view.drop(pack)
        if store.cache is not None:
            store.cache.drop_index(pack)
            store.cache.drop_pack(pack)
    return old_size - new_size
