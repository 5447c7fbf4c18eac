"""Materialising an object at a path: verified bytes, renamed into place, as a copy, hardlink or reflink."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from labvault.refs import Digest
from labvault.storage.objects.fileio import copy_hashed, reflink
from labvault.storage.objects.protocol import MaterializeMode

if TYPE_CHECKING:
    from labvault.storage.objects.local import LocalObjectStore

__all__ = ["materialize"]


def materialize(store: LocalObjectStore, digest: Digest, dest: Path, mode: MaterializeMode) -> None:
    """See :meth:`LocalObjectStore.materialize`; raises plain ``OSError`` for the store to translate."""
    packed = store.packs.read(digest.hex)
    if packed is None and not store.has(digest):
        raise store.not_found(digest)
    tmp = dest.parent / f".{dest.name}.labvault-{secrets.token_hex(4)}"
    try:
        if packed is not None:
            if hashlib.sha256(packed).hexdigest() != digest.hex:
                store.refuse_corrupt(digest)
            with open(tmp, "xb") as out:
                out.write(packed)
        elif mode == "hardlink":
            if not store.verify(digest):
                store.refuse_corrupt(digest)
            os.link(store.path_of(digest), tmp)
        elif not (mode == "reflink" and _try_reflink(store, digest, tmp)):
            _copy_verified(store, digest, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_verified(store: LocalObjectStore, digest: Digest, tmp: Path) -> None:
    out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # read back for the hash
    try:
        with open(store.path_of(digest), "rb", buffering=0) as src:
            hexd = copy_hashed(src.fileno(), out, os.fstat(src.fileno()).st_size)
    finally:
        os.close(out)
    if hexd != digest.hex:  # what was written is checked, not only what was read
        tmp.unlink(missing_ok=True)
        store.refuse_corrupt(digest)


def _try_reflink(store: LocalObjectStore, digest: Digest, tmp: Path) -> bool:
    if not store.verify(digest):
        store.refuse_corrupt(digest)
    with open(store.path_of(digest), "rb") as src, open(tmp, "xb") as out:
        if reflink(src.fileno(), out.fileno()):
            return True
    tmp.unlink()
    return False
