"""Turning a scanned working copy into stored objects and a Merkle tree of per-folder manifests.

Unchanged files (by the stat cache) are not read again. Every object is put inside the caller's
``objects.batch()``, so nothing becomes visible until the batch is durable; metadata comes after.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.entities import SnapshotFile, SnapshotLink
from labvault.refs import Digest
from labvault.services.snapshots.flat import Flat
from labvault.services.snapshots.scan import Scan
from labvault.services.snapshots.statcache import FileChanged, StatCache, read_file_checked
from labvault.services.snapshots.tabular import is_tabular_name, profile_stream
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import TreeEntry, put_tree

__all__ = ["Built", "build_tree"]

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Built:
    root: Digest
    files: list[SnapshotFile] = field(default_factory=list)
    links: list[SnapshotLink] = field(default_factory=list)
    total_bytes: int = 0
    hashed: int = 0  # files read (not answered by the stat cache)
    flat: Flat = field(default_factory=Flat)


def _store_one(objects: ObjectStore, scan: Scan, rel: str) -> tuple[str, tuple[int, int, int, int], Any]:
    path = scan.full_path(rel)
    name = rel.rsplit("/", 1)[-1]
    small = read_file_checked(path)
    if small is not None:
        data, key = small
        digest = objects.put_bytes(data)
        profile = profile_stream(name, io.BytesIO(data)) if is_tabular_name(name) else None
        return digest.hex, key, profile
    before = os.stat(path)
    digest = objects.put_file(Path(path))  # hashes while copying: one read pass
    after = os.stat(path)
    key = (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns)
    if key != (before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns):
        raise FileChanged(path)
    profile = None
    if is_tabular_name(name):
        with open(path, "rb") as f:
            profile = profile_stream(name, f)
        if os.stat(path).st_mtime_ns != key[2]:
            raise FileChanged(path)
    return digest.hex, key, profile


def build_tree(
    objects: ObjectStore,
    scan: Scan,
    cache: StatCache,
    *,
    known: set[bytes],
    progress: Progress | None = None,
    workers: int = 1,
) -> Built:
    """Store the working copy's files and trees; ``known`` are digests already referenced by metadata.

    A file answered by the stat cache is not read again if its digest is ``known`` (a stored,
    referenced object gc will keep); otherwise it is read and put again.
    """
    total = len(scan.files)
    results: dict[str, tuple[str, Any]] = {}
    todo: list[str] = []
    for rel, key in scan.files.items():
        hit = cache.lookup(rel, key)
        if hit is not None and hit[0] in known and (hit[1] is not None or not is_tabular_name(rel)):
            results[rel] = (hit[0].hex(), hit[1])
        else:
            todo.append(rel)
    done = len(results)
    if progress:
        progress(done, total)

    def work(rel: str) -> tuple[str, str, tuple[int, int, int, int], Any]:
        sha, key, profile = _store_one(objects, scan, rel)
        return rel, sha, key, profile

    # File reads, writes and hashing of buffers > 2 KiB release the GIL, so a couple of threads
    # keep both cores busy on many small files.
    if len(todo) > 64 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = pool.map(work, todo, chunksize=64)
            for rel, sha, key, profile in outcomes:
                results[rel] = (sha, profile)
                cache.put(rel, key, bytes.fromhex(sha), profile)
                done += 1
                if progress and done % 256 == 0:
                    progress(done, total)
    else:
        for rel in todo:
            _, sha, key, profile = work(rel)
            results[rel] = (sha, profile)
            cache.put(rel, key, bytes.fromhex(sha), profile)
            done += 1
            if progress and done % 256 == 0:
                progress(done, total)
    if progress:
        progress(total, total)
    cache.retain(scan.files)

    built = Built(root=Digest("0" * 64), hashed=len(todo))
    children: dict[str, list[TreeEntry]] = defaultdict(list)
    flat_files: dict[str, tuple[str, int, Any]] = {}
    for rel, (sha, profile) in results.items():
        size = scan.files[rel][1]
        digest = Digest(sha)
        parent, _, name = rel.rpartition("/")
        children[parent].append(TreeEntry(name, "file", digest, size, extra=profile or {}))
        flat_files[rel] = (sha, size, profile or None)
        built.total_bytes += size
        prof = profile or {}
        schema = prof.get("schema")
        built.files.append(
            SnapshotFile(
                rel,
                digest,
                size,
                prof.get("record_count"),
                tuple((c[0], c[1]) for c in schema) if schema is not None else None,
                prof.get("note"),
            )
        )
    for rel, target in scan.links.items():
        parent, _, name = rel.rpartition("/")
        children[parent].append(TreeEntry(name, "link", target=target))
        built.links.append(SnapshotLink(rel, target))
    built.flat = Flat.from_files(flat_files, scan.links, scan.dirs)
    # Folders deepest first, so every subtree digest exists before its parent is encoded.
    for d in sorted(scan.dirs, key=lambda p: p.count("/"), reverse=True):
        entries = children.pop(d, [])
        digest = put_tree(objects, entries)
        parent, _, name = d.rpartition("/")
        children[parent].append(TreeEntry(name, "dir", digest, sum(e.size for e in entries)))
    built.root = put_tree(objects, children.pop("", []))
    built.files.sort(key=lambda f: f.path)
    built.links.sort(key=lambda link: link.path)
    return built
