"""Stage outputs in the object store: store them after a stage ran, restore them (verified) by hash.

A file output is one object; a folder output is a Merkle tree of objects, built by the same code as
``data add`` (snapshots/build.py), so its recorded hash is its root tree. Restoring writes every file
through the contained writer (a stored path never leads outside the output) from verified reads; a
corrupt or missing object is exit 5, naming the output.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from labvault.errors import IntegrityError, NotFound, StorageError
from labvault.refs import Digest
from labvault.services.pipelines.hashing import HashCache
from labvault.services.snapshots.build import build_tree
from labvault.services.snapshots.flat import load_flat
from labvault.services.snapshots.scan import scan_path
from labvault.services.snapshots.statcache import StatCache, fs_clock_ns
from labvault.storage.contained import Dest
from labvault.storage.objects.materialize import materialize_into, read_verified
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["remove_outputs", "restore_output", "store_output"]

_SMALL = 1024 * 1024
# Writers of a restore: as many as cores, 2 to 4. The kernel's work of creating files is what a restore
# waits on; on 2 cores, 4 threads spent more of it contending than 2 did.
_WRITERS = min(4, max(2, os.cpu_count() or 2))
_BATCH_BYTES = 32 * 1024 * 1024  # small files read per batch
_BATCH_FILES = 4096
_STALE_S = 3600.0  # a temp folder of a restore this old was left by a killed one


def store_output(objects: ObjectStore, root: Path, vault_dir: Path, rel: str) -> tuple[str, str]:
    """Put the output at ``rel`` in the object store (call inside ``objects.batch()``): ``(sha256:hex, kind)``."""
    full = root / rel
    if os.path.isdir(full) and not os.path.islink(full):
        vst = os.stat(vault_dir)
        scan = scan_path(full, skip=(vst.st_dev, vst.st_ino))
        stamp = fs_clock_ns(vault_dir / "cache" / "stat")
        cache = StatCache.for_dataset(vault_dir, full)
        built = build_tree(objects, scan, cache, referenced=set())
        cache.save(stamp)
        return str(built.root), "dir"
    return str(objects.put_file(full)), "file"


def remove_outputs(root: Path, outs: list[str] | tuple[str, ...]) -> None:
    """Remove declared outputs (before a stage runs, and for stages that did not finish)."""
    with Dest.open(root, create=False) as top:
        for rel in outs:
            top.remove(rel)


def _write_files(objects: ObjectStore, base: Dest, files: dict[str, tuple[str, int, object]]) -> int:
    """Write a tree's files below ``base``, a folder this process has just made (nothing is there):
    small ones are read (verified) here in batches, in pack order, and written straight, without
    temp files, by a few threads, one folder per task, since creating files is what a restore waits
    on; large ones are streamed."""
    small: list[tuple[str, str, int]] = []
    for path, (sha, size, _profile) in sorted(files.items()):
        if size > _SMALL:
            materialize_into(objects, Digest(sha), base, path)
        else:
            small.append((path, sha, size))

    def write_folder(folder: Dest, items: list[tuple[str, bytes]]) -> None:
        with folder:
            for name, data in items:
                folder.create_file(name, data)

    with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
        pending: list[Future[None]] = []
        for batch in _batches(small):
            # Read and verify in this thread (the store is not shared across threads); write in the pool.
            blobs = read_verified(objects, [Digest(sha) for _p, sha, _s in batch])
            by_folder: dict[str, list[tuple[str, bytes]]] = {}
            for path, sha, _size in batch:
                folder, _, name = path.rpartition("/")
                by_folder.setdefault(folder, []).append((name, blobs[sha]))
            for fut in pending:  # at most two batches held in memory
                fut.result()
            pending = [pool.submit(write_folder, base.sub(f or ".", create=False), v) for f, v in by_folder.items()]
        for fut in pending:
            fut.result()
    return len(files)


def _batches(small: list[tuple[str, str, int]]) -> Iterator[list[tuple[str, str, int]]]:
    batch: list[tuple[str, str, int]] = []
    held = 0
    for item in small:
        batch.append(item)
        held += item[2]
        if held >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def _sweep_temps(top: Dest, rel: str) -> None:
    """Remove the temp folders of this output that a killed restore left beside it (an hour old: a
    restore still running has made its folders, and so touched its temp folder, more recently)."""
    parent, _, name = rel.rpartition("/")
    pattern = re.compile(re.escape(f".{name[:200]}.labvault-") + "[0-9a-f]{8}")
    try:
        with top.sub(parent or ".", create=False) as folder:
            left = [n for n in os.listdir(folder.fd) if pattern.fullmatch(n)]
            for entry in left:
                st = folder.lstat(entry)
                if st is not None and stat.S_ISDIR(st.st_mode) and time.time() - st.st_mtime > _STALE_S:
                    folder.remove(entry)
    except (FileNotFoundError, StorageError):
        return  # no folder yet: nothing was left there


def restore_output(
    objects: ObjectStore, root: Path, vault_dir: Path, hashes: HashCache, rel: str, digest: str, kind: str
) -> int:
    """Write the stored output ``digest`` at ``rel`` (replacing what is there); the number of files written."""
    d = Digest(digest.removeprefix("sha256:"))
    written = 0
    try:
        with Dest.open(root, create=False) as top:
            if kind == "file":
                top.remove(rel)
                parent, _, name = rel.rpartition("/")
                with top.sub(parent or ".") as base:
                    materialize_into(objects, d, base, name)
                written = 1
            else:
                flat = load_flat(objects, vault_dir, d)
                # Built under a temp name, then renamed into place: the folder is seen whole or not at all.
                _sweep_temps(top, rel)
                with top.built_dir(rel, replace=True) as base:
                    for sub in sorted(flat.dirs):
                        base.mkdir(sub)
                    written = _write_files(objects, base, flat.files)
                    for path, target in flat.links.items():
                        base.symlink(path, target)
    except NotFound as exc:
        raise IntegrityError(f"output {rel}: {exc.message}", hint="run the stage again with --force") from exc
    except IntegrityError as exc:
        raise IntegrityError(f"output {rel}: {exc.message}", hint="run the stage again with --force") from exc
    hashes.record(rel, digest)
    return written
