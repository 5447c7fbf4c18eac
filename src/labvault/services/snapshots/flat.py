"""A snapshot's tree flattened to ``path -> (sha256, size, profile)``, cached by its root digest.

Trees are immutable and content-addressed, so the flat form of a root digest never changes; it is
cached under ``.labvault/cache/trees/`` (marshal, rebuilt from the trees if missing or unreadable),
which keeps ``data status`` from decoding one JSON tree per folder on every call.
"""

from __future__ import annotations

import marshal
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.refs import Digest
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import decode_tree

__all__ = ["Flat", "load_flat", "save_flat"]

_FORMAT = 1


@dataclass(slots=True)
class Flat:
    files: dict[str, tuple[str, int, Any]] = field(default_factory=dict)  # path -> (sha hex, size, profile)
    links: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)

    def shas(self) -> set[str]:
        return {v[0] for v in self.files.values()}


def _walk(objects: ObjectStore, root: Digest) -> Flat:
    flat = Flat()
    stack: list[tuple[str, Digest]] = [("", root)]
    while stack:
        prefix, digest = stack.pop()
        for e in decode_tree(objects.get_bytes(digest, verify=True), digest=digest):
            path = prefix + e.name
            if e.type == "file":
                assert e.digest is not None
                flat.files[path] = (e.digest.hex, e.size, e.extra or None)
            elif e.type == "link":
                flat.links[path] = e.target or ""
            else:
                assert e.digest is not None
                flat.dirs.append(path)
                stack.append((path + "/", e.digest))
    return flat


def _cache_path(vault_dir: Path, root: Digest) -> Path:
    return vault_dir / "cache" / "trees" / f"{root.hex}.bin"


def save_flat(vault_dir: Path, root: Digest, flat: Flat) -> None:
    """Cache a tree's flat form (``add`` knows it already, so status never walks a fresh tree)."""
    cache = _cache_path(vault_dir, root)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{secrets.token_hex(4)}")
        with open(tmp, "wb") as f:
            marshal.dump((_FORMAT, flat.files, flat.links, flat.dirs), f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache we cannot write is only slower


def load_flat(objects: ObjectStore, vault_dir: Path | None, root: Digest) -> Flat:
    cache = _cache_path(vault_dir, root) if vault_dir else None
    if cache is not None:
        try:
            with open(cache, "rb") as f:
                fmt, files, links, dirs = marshal.load(f)
            if fmt == _FORMAT:
                return Flat(files, links, dirs)
        except (OSError, ValueError, EOFError, TypeError):
            pass
    flat = _walk(objects, root)
    if vault_dir is not None:
        save_flat(vault_dir, root, flat)
    return flat
