"""Content hashes of stage deps and outputs, and the cache that makes a no-op run cheap.

A file's hash is the sha256 of its bytes (its object digest); a folder's is the digest of its root
tree object, the same Merkle tree ``data add`` and the cache store (storage/objects/tree.py), so a
recorded output hash is also the object to restore it from.

``.labvault/cache/pipelines/hashes.json`` maps each path to the stat signature it had when hashed
(one stat for a file, a digest of every file's stat for a folder) and the hash. Like the stat cache
of ``data status`` it guards against "racily clean" files: each entry keeps the filesystem clock read
just before it was hashed, and an entry whose files were modified at or after that stamp is not
trusted (they may have changed again within the same timestamp tick). It carries a checksum of itself and is
ignored when that does not verify.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.refs import Digest
from labvault.services.snapshots.scan import Scan, scan_path
from labvault.services.snapshots.statcache import StatCache, fs_clock_ns, hash_file
from labvault.storage.contained import write_text

__all__ = ["HashCache", "cache_dir"]

_FORMAT = "labvault.pipeline-hashes/1"


def cache_dir(vault_dir: Path) -> Path:
    return vault_dir / "cache" / "pipelines"


class _HashOnly:
    """An object store that only names bytes: a folder's tree digest without storing anything."""

    def put_bytes(self, data: bytes) -> Digest:
        return Digest(hashlib.sha256(data).hexdigest())

    def put_file(self, path: Path) -> Digest:
        return Digest(hash_file(path)[0].hex())


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


def _scan_sig(scan: Scan) -> tuple[str, int]:
    """A digest of a folder's listing with every stat key, and the newest mtime/ctime in it."""
    h = hashlib.sha256()
    newest = 0
    for rel, key in scan.files.items():
        h.update(f"{rel}\0{key[0]},{key[1]},{key[2]},{key[3]}\n".encode("utf-8", "surrogateescape"))
        newest = max(newest, key[2], key[3])
    for rel, target in sorted(scan.links.items()):
        h.update(f"{rel}\0->{target}\n".encode("utf-8", "surrogateescape"))
    for d in scan.dirs:
        h.update(f"{d}/\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest(), newest


class HashCache:
    """Path -> content hash, answered from the stat signature when nothing changed."""

    def __init__(self, root: Path, vault_dir: Path) -> None:
        self.root = root
        self.vault_dir = vault_dir
        self.path = cache_dir(vault_dir) / "hashes.json"
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        self._lock = threading.RLock()  # the runner's worker threads share one cache
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(64 * 1024 * 1024)
            doc = json.loads(raw)
            body = json.dumps(doc["entries"], sort_keys=True, separators=(",", ":"))
            if doc.get("format") != _FORMAT or doc.get("checksum") != hashlib.sha256(body.encode()).hexdigest():
                return
            entries = doc["entries"]
            if isinstance(entries, dict):
                self.entries = entries
        except (OSError, ValueError, KeyError, TypeError):
            return  # a cache: missing or damaged costs one re-hash

    def _clock(self) -> int:
        return fs_clock_ns(cache_dir(self.vault_dir))

    @staticmethod
    def _fresh(cached: Any, kind: str, sig: str, newest: int) -> bool:
        return (
            isinstance(cached, list)
            and len(cached) == 4
            and cached[0] == kind
            and cached[1] == sig
            and isinstance(cached[3], int)
            and newest < cached[3]
        )

    def digest(self, rel: str) -> str | None:
        """``sha256:<hex>`` of the file or folder at the project-relative ``rel``; None if it is absent."""
        with self._lock:
            return self._digest(rel)

    def record(self, rel: str, digest: str) -> None:
        """``rel`` was just written with the content ``digest`` (a restore): remember it without reading it."""
        full = self.root / rel
        with self._lock:
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                vst = os.stat(self.vault_dir)
                sig, _ = _scan_sig(scan_path(full, skip=(vst.st_dev, vst.st_ino)))
                entry = ["dir", sig, digest]
            else:
                entry = ["file", f"{st.st_ino},{st.st_size},{st.st_mtime_ns},{st.st_ctime_ns}", digest]
            # The clock after the writes: what was modified before it and still has this stat is ours.
            self._put(rel, [*entry, self._clock()])

    def _digest(self, rel: str) -> str | None:
        full = self.root / rel
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValidationError(f"{rel}: cannot read ({exc.strerror})", hint="check the permissions") from exc
        cached = self.entries.get(rel)
        if stat.S_ISREG(st.st_mode):
            sig = f"{st.st_ino},{st.st_size},{st.st_mtime_ns},{st.st_ctime_ns}"
            newest = max(st.st_mtime_ns, st.st_ctime_ns)
            if cached is not None and self._fresh(cached, "file", sig, newest):
                return str(cached[2])
            clock = self._clock()
            raw, key = hash_file(full)
            digest = "sha256:" + raw.hex()
            self._put(rel, ["file", f"{key[0]},{key[1]},{key[2]},{key[3]}", digest, clock])
            return digest
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise ValidationError(
                f"{rel} is not a regular file or folder", hint="deps and outputs are files or folders"
            )
        vst = os.stat(self.vault_dir)
        scan = scan_path(full, skip=(vst.st_dev, vst.st_ino))
        sig, newest = _scan_sig(scan)
        if cached is not None and self._fresh(cached, "dir", sig, newest):
            return str(cached[2])
        clock = self._clock()
        digest = str(self.tree_of(full, scan))
        self._put(rel, ["dir", sig, digest, clock])
        return digest

    def tree_of(self, full: Path, scan: Scan) -> Digest:
        from labvault.services.snapshots.build import build_tree  # tabular profiling: only when hashing

        stamp = fs_clock_ns(self.vault_dir / "cache" / "stat")
        cache = StatCache.for_dataset(self.vault_dir, full)
        built = build_tree(_HashOnly(), scan, cache, referenced=_Everything())  # type: ignore[arg-type]
        cache.save(stamp)
        return built.root

    def _put(self, rel: str, entry: list[Any]) -> None:
        self.entries[rel] = entry
        self.dirty = True

    def forget(self, rel: str) -> None:
        with self._lock:
            if self.entries.pop(rel, None) is not None:
                self.dirty = True

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        if not self.dirty:
            return
        body = json.dumps(self.entries, sort_keys=True, separators=(",", ":"))
        doc = {
            "checksum": hashlib.sha256(body.encode()).hexdigest(),
            "entries": self.entries,
            "format": _FORMAT,
        }
        cache_dir(self.vault_dir).mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(doc, sort_keys=True, separators=(",", ":")))
        self.dirty = False
