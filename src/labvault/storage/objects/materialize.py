"""Materialising an object at a path: verified bytes, renamed into place, as a copy, hardlink or reflink.

Every write goes through :class:`~labvault.storage.contained.Dest`: the bytes land in a temp file
beside their final name, and the rename happens only once they verified, so a corrupt object never
leaves a file behind and no stored name can lead the write out of its destination.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from labvault.refs import Digest
from labvault.storage.contained import Dest
from labvault.storage.objects.fileio import CHUNK, copy_hashed, reflink, write_all
from labvault.storage.objects.packcopy import check_frames, plan_spans
from labvault.storage.objects.protocol import MaterializeMode, ObjectStore

if TYPE_CHECKING:
    from labvault.storage.objects.local import LocalObjectStore

__all__ = ["materialize", "materialize_into", "read_verified"]


def materialize(store: LocalObjectStore, digest: Digest, dest: Path, mode: MaterializeMode) -> None:
    """See :meth:`LocalObjectStore.materialize`; raises plain ``OSError`` for the store to translate."""
    with Dest.open(dest.parent, create=False) as into:
        materialize_into(store, digest, into, dest.name, mode=mode)


def materialize_into(
    store: ObjectStore, digest: Digest, into: Dest, rel: str, *, mode: MaterializeMode = "copy"
) -> None:
    """Write the object's verified bytes at ``rel`` below ``into`` (a stored path: never followed out).

    Any store works (its verifying reader raises before the rename); the local store copies in the
    kernel, or shares blocks with a hardlink or reflink.
    """
    from labvault.storage.objects.local import LocalObjectStore

    if not isinstance(store, LocalObjectStore):
        with store.open(digest, verify=True) as src:
            into.write(rel, lambda out: _drain(src, out))
        return
    packed = store.packs.read(digest.hex)
    if packed is None and not store.has(digest):
        raise store.not_found(digest)
    if packed is not None:
        if hashlib.sha256(packed).hexdigest() != digest.hex:
            store.refuse_corrupt(digest)
        into.write_file(rel, packed)
    elif mode == "hardlink":
        if not store.verify(digest):
            store.refuse_corrupt(digest)
        into.hardlink(rel, store.path_of(digest))
    else:
        into.write(rel, lambda out: _copy_verified(store, digest, out, reflinked=mode == "reflink"))


def read_verified(store: ObjectStore, digests: list[Digest]) -> dict[str, bytes]:
    """hex -> the verified bytes of each of ``digests`` (small objects: they are held in memory).

    From a local store's packs a span of neighbouring records at a time (``packcopy.plan_spans``,
    each record's header and sha256 checked); any other object one by one. A corrupt object is
    quarantined and raises (exit 5); a missing one is ``NotFound``.
    """
    from labvault.storage.objects.local import LocalObjectStore

    out: dict[str, bytes] = {}
    if isinstance(store, LocalObjectStore):
        spans, _rest = plan_spans(store.packs, digests)
        for span in spans:
            frames = store.packs.read_span(span.pack, span.start, span.stop - span.start)
            if frames is None:  # compacted away meanwhile: read one by one below
                continue
            runs, _bad = check_frames(frames, span)  # a record that fails is read (and judged) one by one
            for start, _stop, records in runs:
                for key, offset, size in records:
                    out[key.hex()] = frames[start + offset : start + offset + size]
    for digest in digests:
        if digest.hex not in out:
            out[digest.hex] = store.get_bytes(digest, verify=True)
    return out


def _drain(src: BinaryIO, out: int) -> None:
    while chunk := src.read(CHUNK):
        write_all(out, chunk)


def _copy_verified(store: LocalObjectStore, digest: Digest, out: int, *, reflinked: bool) -> None:
    with open(store.path_of(digest), "rb", buffering=0) as src:
        if reflinked:
            if not store.verify(digest):
                store.refuse_corrupt(digest)
            if reflink(src.fileno(), out):
                return
        hexd = copy_hashed(src.fileno(), out, os.fstat(src.fileno()).st_size)
    if hexd != digest.hex:  # what was written is checked, not only what was read
        store.refuse_corrupt(digest)
