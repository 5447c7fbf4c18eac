"""A snapshot's tree flattened to its file list, cached by its root digest.

Trees are immutable and content-addressed, so the flat form of a root digest never changes; it is
cached under ``.labvault/cache/trees/`` (rebuilt from the trees if missing or unreadable), which
keeps ``data status`` from decoding one JSON tree per folder on every call. The cache is columnar
(paths joined by NUL, sizes as one int64 array, digests as one bytes string): it loads in a few
milliseconds for 20,000 files, where a dict of tuples takes tens.

A cache is untrusted input like any file read back: each entry carries a sha256 of itself and of
the root digest it stands for, and one that does not verify is ignored and rebuilt; ``fsck``
checks every entry against its tree (:func:`check_tree_caches`).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.errors import IntegrityError, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.contained import Dest
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import decode_tree, entry_digest

__all__ = ["FlatTree", "check_tree_caches", "load_flat", "save_flat"]

# A cache entry: this magic (its format), sha256(root digest + payload), then the marshal payload.
_MAGIC = b"labvault.flat/3\n"

#: Called with the digests of trees about to be read (to fetch them together).
Prefetch = Callable[[Sequence[Digest]], object]


@dataclass(slots=True)
class FlatTree:
    """A snapshot's whole tree as one file list: each file's path, size, digest and tabular profile,
    plus its symlinks and folders. Columnar, so that it loads fast (see the module docstring)."""

    paths: list[str] = field(default_factory=list)
    sizes: array[int] = field(default_factory=lambda: array("q"))
    digests: bytes = b""  # 32 bytes per path, in order
    profiles: dict[int, Any] = field(default_factory=dict)  # index -> tabular profile
    links: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    _index: dict[str, int] | None = None
    _files: dict[str, tuple[str, int, Any]] | None = None

    @classmethod
    def from_files(
        cls, files: dict[str, tuple[str, int, Any]], links: dict[str, str] | None = None, dirs: list[str] | None = None
    ) -> FlatTree:
        paths = list(files)
        flat = cls(
            paths,
            array("q", [files[p][1] for p in paths]),
            b"".join(bytes.fromhex(files[p][0]) for p in paths),
            {i: files[p][2] for i, p in enumerate(paths) if files[p][2]},
            dict(links or {}),
            list(dirs or []),
        )
        flat._files = files
        return flat

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = dict(zip(self.paths, range(len(self.paths)), strict=True))
        return self._index

    @property
    def files(self) -> dict[str, tuple[str, int, Any]]:
        """path -> (sha256 hex, size, profile or None)."""
        if self._files is None:
            d = self.digests
            self._files = {
                p: (d[32 * i : 32 * i + 32].hex(), self.sizes[i], self.profiles.get(i))
                for i, p in enumerate(self.paths)
            }
        return self._files

    def digest_at(self, i: int) -> bytes:
        return self.digests[32 * i : 32 * i + 32]

    def shas(self) -> set[bytes]:
        d = self.digests
        return {d[j : j + 32] for j in range(0, len(d), 32)}


def _walk(objects: ObjectStore, root: Digest, prefetch: Prefetch | None = None) -> FlatTree:
    """The tree walked a level at a time: ``prefetch`` is handed each level's trees before they are
    read (a server's client fetches them in one batch request instead of one request per folder)."""
    files: dict[str, tuple[str, int, Any]] = {}
    links: dict[str, str] = {}
    dirs: list[str] = []
    level: list[tuple[str, Digest]] = [("", root)]
    while level:
        if prefetch is not None:
            prefetch([digest for _, digest in level])
        below: list[tuple[str, Digest]] = []
        for prefix, digest in level:
            for e in decode_tree(objects.get_bytes(digest, verify=True), digest=digest):
                path = prefix + e.name
                if e.type == "file":
                    files[path] = (entry_digest(e).hex, e.size, e.extra or None)
                elif e.type == "link":
                    links[path] = e.target or ""
                else:
                    dirs.append(path)
                    below.append((path + "/", entry_digest(e)))
        level = below
    return FlatTree.from_files(files, links, dirs)


def _cache_path(vault_dir: Path, root: Digest) -> Path:
    return vault_dir / "cache" / "trees" / f"{root.hex}.bin"


def _seal(root: Digest, payload: bytes) -> bytes:
    # The checksum covers the digest the entry stands for too: an entry copied under another
    # root's name does not verify either.
    return _MAGIC + hashlib.sha256(bytes.fromhex(root.hex) + payload).digest() + payload


def _unseal(root: Digest, raw: bytes) -> FlatTree | None:
    """The cached flat form if ``raw`` verifies against ``root`` and is well formed, else None."""
    head = len(_MAGIC)
    payload = raw[head + 32 :]
    if raw[:head] != _MAGIC or hashlib.sha256(bytes.fromhex(root.hex) + payload).digest() != raw[head : head + 32]:
        return None
    try:
        joined, sizes, digests, profiles, links, dirs = marshal.loads(payload)
        paths = joined.split("\0") if joined else []
        arr = array("q")
        arr.frombytes(sizes)
    except (ValueError, EOFError, TypeError, AttributeError):
        return None
    if not (len(arr) == len(paths) == len(digests) // 32 and len(digests) % 32 == 0):
        return None
    if not (isinstance(profiles, dict) and isinstance(links, dict) and isinstance(dirs, list)):
        return None
    return FlatTree(paths, arr, digests, profiles, links, dirs)


def save_flat(vault_dir: Path, root: Digest, flat: FlatTree) -> None:
    """Cache a tree's flat form (``add`` knows it already, so status never walks a fresh tree)."""
    doc = ("\0".join(flat.paths), flat.sizes.tobytes(), flat.digests, flat.profiles, flat.links, flat.dirs)
    try:
        with Dest.open(vault_dir / "cache" / "trees") as caches:
            caches.write_file(f"{root.hex}.bin", _seal(root, marshal.dumps(doc)))
    except LabvaultError:
        pass  # a cache we cannot write is only slower


def load_flat(
    objects: ObjectStore, vault_dir: Path | None, root: Digest, *, prefetch: Prefetch | None = None
) -> FlatTree:
    """The flat form of the tree ``root``: from the cache when it verifies, else walked (``prefetch``:
    see :func:`_walk`) and cached."""
    if vault_dir is not None:
        try:
            with open(_cache_path(vault_dir, root), "rb") as f:
                cached = _unseal(root, f.read())
            if cached is not None:
                return cached
        except OSError:
            pass
    try:
        flat = _walk(objects, root, prefetch)
    except NotFound as exc:  # the metadata names this tree: a missing one is damage, not a wrong name
        raise IntegrityError(f"a tree of snapshot {root} is missing from the vault ({exc.message})") from exc
    if vault_dir is not None:
        save_flat(vault_dir, root, flat)
    return flat


def check_tree_caches(objects: ObjectStore, vault_dir: Path) -> list[str]:
    """fsck's check of ``cache/trees/``: every entry verifies and matches the tree it stands for.

    An entry that does not is removed (it is rebuilt from the trees when next needed) and reported.
    """
    problems = []
    folder = vault_dir / "cache" / "trees"
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    with Dest.open(folder, create=False) as caches:
        for name in names:
            hexd, _, ext = name.partition(".")
            if name.startswith(".") or ext != "bin":
                continue  # a temp file of a writer
            why = _cache_problem(objects, folder / name, hexd)
            if why is not None:
                problems.append(f"tree cache {name} {why}; removed (it is rebuilt from the trees when needed)")
                with contextlib.suppress(LabvaultError):
                    caches.remove(name)
    return problems


def _cache_problem(objects: ObjectStore, path: Path, hexd: str) -> str | None:
    try:
        root = Digest(hexd)
    except ValidationError:
        return "is not named after a tree"
    try:
        cached = _unseal(root, path.read_bytes())
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if cached is None:
        return "does not verify (damaged or of an older format)"
    if not objects.has(root):
        return None  # fsck reports the tree itself if anything refers to it
    try:
        walked = _walk(objects, root)
    except LabvaultError:
        return None  # the tree is reported by fsck's walk

    def shape(flat: FlatTree) -> tuple[dict[str, tuple[str, int]], dict[str, str], set[str]]:
        return {p: (h, n) for p, (h, n, _) in flat.files.items()}, flat.links, set(flat.dirs)

    same = shape(cached) == shape(walked)
    return None if same else "differs from the tree it stands for"
