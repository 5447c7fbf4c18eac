"""``data status``: what changed in the working copy since the snapshot the lock file names.

This path is kept lean on purpose: it reads ``labvault.lock``, the stat cache and the snapshot's
cached flat index, and never the metadata database (no SQLAlchemy import), so the whole command
starts and answers fast. Files whose stat matches the cache (and are not racily clean) are not read.
"""

from __future__ import annotations

import os
from array import array
from itertools import chain
from pathlib import Path

from labvault.entities import DatasetStatus
from labvault.errors import NotFound
from labvault.services.snapshots.flat import FlatTree, load_flat
from labvault.services.snapshots.lockfile import LockEntry, read_lock, relative_key
from labvault.services.snapshots.scan import Scan, scan_path
from labvault.services.snapshots.statcache import FileChanged, StatCache, entry_unchanged, fs_clock_ns, hash_file
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["compare", "select_entries", "working_status"]


def select_entries(root: Path, name: str | None, path: Path | None) -> list[LockEntry]:
    """Lock entries for ``name`` and/or ``path`` (all of them when neither is given)."""
    entries = read_lock(root)
    if not entries:
        raise NotFound(
            f"no datasets are recorded in {root / 'labvault.lock'}",
            hint="snapshot one with `labvault data add NAME PATH`",
        )
    chosen = list(entries.values())
    if path is not None:
        key = relative_key(root, path)
        chosen = [e for e in chosen if e.path == key]
    if name is not None:
        chosen = [e for e in chosen if e.ref.name == name]
    if not chosen:
        what = " and ".join(x for x in (f"dataset {name!r}" if name else "", f"path {path}" if path else "") if x)
        raise NotFound(f"{what} is not in labvault.lock", hint="list what is pinned with `labvault data status`")
    return sorted(chosen, key=lambda e: e.path)


def compare(scan: Scan, flat: FlatTree, cache: StatCache) -> tuple[list[str], list[str], list[str], list[str]]:
    """(added, removed, modified, changing) between a scan and a snapshot, using and updating the cache."""
    if scan.links == flat.links and _unchanged(scan, flat, cache):
        return [], [], [], []
    added: list[str] = []
    modified: list[str] = []
    changing: list[str] = []
    index, sizes, digests = flat.index, flat.sizes, flat.digests
    cols = cache.columns()
    cindex, ckeys, cdigests, stamp = cols if cols is not None else ({}, None, b"", 0)
    for rel, key in scan.files.items():
        i = index.get(rel)
        if i is None:
            added.append(rel)
            continue
        if key[1] != sizes[i]:
            modified.append(rel)  # a different size is a change; no need to read it
            continue
        want = digests[32 * i : 32 * i + 32]
        # The stat cache's lookup on its columns: this loop runs once per file of a changed folder.
        c = cindex.get(rel)
        if c is not None and ckeys is not None and entry_unchanged(ckeys, c, key, stamp):
            if cdigests[32 * c : 32 * c + 32] != want:
                modified.append(rel)
            continue
        hit = cache.lookup(rel, key)
        if hit is not None:
            got = hit[0]
        else:
            try:
                got, key2 = hash_file(scan.full_path(rel))
            except FileChanged:
                changing.append(rel)
                continue
            except FileNotFoundError:
                continue  # vanished since the scan: reported as removed below
            cache.put(rel, key2, got, flat.profiles.get(i) if got == want else None)
        if got != want:
            modified.append(rel)
    for rel, target in scan.links.items():
        if rel not in flat.links:
            added.append(rel)
        elif flat.links[rel] != target:
            modified.append(rel)
    # a path that is now a link but was a file (or the reverse) shows as added + removed
    removed = [r for r in flat.paths if r not in scan.files]
    removed += [r for r in flat.links if r not in scan.links]
    return sorted(added), sorted(removed), sorted(modified), sorted(changing)


def _unchanged(scan: Scan, flat: FlatTree, cache: StatCache) -> bool:
    """The common answer, "nothing changed", in bulk: the scan lists the snapshot's files in the
    order both the snapshot and the stat cache keep them, with the stat keys the cache holds."""
    joined = "\0".join(scan.files)
    if joined != "\0".join(flat.paths):
        return False
    keys = array("q", chain.from_iterable(scan.files.values()))
    return cache.holds_unchanged(joined, keys, flat.digests)


def working_status(objects: ObjectStore, root: Path, vault_dir: Path, entry: LockEntry) -> DatasetStatus:
    target = root / entry.path
    if not os.path.lexists(target):
        return DatasetStatus(entry.path, str(entry.ref), missing=True)
    st = os.stat(vault_dir)
    stamp = fs_clock_ns(vault_dir / "cache" / "stat")
    scan = scan_path(target, skip=(st.st_dev, st.st_ino))
    flat = load_flat(objects, vault_dir, entry.content_hash)
    cache = StatCache.for_dataset(vault_dir, target)
    added, removed, modified, changing = compare(scan, flat, cache)
    cache.retain(scan.files)
    if cache.dirty or cache.stamp_ns == 0:
        cache.save(stamp)
    return DatasetStatus(entry.path, str(entry.ref), tuple(added), tuple(removed), tuple(modified), tuple(changing))
