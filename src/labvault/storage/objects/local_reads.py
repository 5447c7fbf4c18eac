"""The read side of :class:`~labvault.storage.objects.local.LocalObjectStore` (a mixin).

A packed object is read from its pack through the index (``packindex.py``), a larger one from its own
file under ``objects/sha256/``. A verifying read that finds bytes not matching their digest quarantines
the object and raises the integrity error (exit 5).
"""

from __future__ import annotations

import hashlib
import heapq
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, IntegrityError, NotFound
from labvault.refs import Digest, parse_digest
from labvault.storage.objects import loose
from labvault.storage.objects.fileio import CHUNK, VerifyingReader, sha256_file
from labvault.storage.objects.packs import PackStore

__all__ = ["LocalReads"]


class LocalReads:
    """Needs the store's packs, paths and the few methods declared here."""

    root: Path
    quarantine_dir: Path
    packs: PackStore
    path_of: Callable[[Digest], Path]
    _path_s: Callable[[str], str]
    quarantine: Callable[[Digest], Path]
    refuse_corrupt: Callable[[Digest], NoReturn]
    not_found: Callable[[Digest], NotFound | IntegrityError]

    # -- reads --------------------------------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        return self.packs.lookup(digest.hex) is not None or os.path.isfile(self._path_s(digest.hex))

    def info(self, digest: Digest) -> ObjectInfo:
        packed = self.packs.lookup(digest.hex)
        if packed is not None:
            return ObjectInfo(digest, packed[2], packed[3])
        try:
            st = os.stat(self._path_s(digest.hex))
        except FileNotFoundError:
            raise self.not_found(digest) from None
        return ObjectInfo(digest, st.st_size, st.st_mtime)

    def locate(self, digest: Digest) -> tuple[Path, int, int]:
        """Where an object's bytes are: ``(file, offset, size)``; a loose object is a whole file."""
        packed = self.packs.locate(digest.hex)
        if packed is not None:
            return packed
        path = self.path_of(digest)
        try:
            return path, 0, path.stat().st_size
        except FileNotFoundError:
            raise self.not_found(digest) from None

    def is_packed(self, digest: Digest) -> bool:
        return self.packs.lookup(digest.hex) is not None

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        data = self.packs.read(digest.hex)
        if data is not None:
            if not verify:
                return io.BytesIO(data)
            return io.BufferedReader(VerifyingReader(io.BytesIO(data), digest.hex, lambda: self.refuse_corrupt(digest)))  # type: ignore[return-value]
        try:
            raw = open(self._path_s(digest.hex), "rb", buffering=0)  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise self.not_found(digest) from None
        if not verify:
            return io.BufferedReader(raw, CHUNK)  # type: ignore[return-value]
        reader = VerifyingReader(raw, digest.hex, lambda: self.refuse_corrupt(digest))
        return io.BufferedReader(reader, CHUNK)  # type: ignore[return-value]

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        data = self.packs.read(digest.hex)
        if data is None:
            try:
                with open(self._path_s(digest.hex), "rb", buffering=0) as f:
                    data = f.read()
            except FileNotFoundError:
                raise self.not_found(digest) from None
        if verify and hashlib.sha256(data).hexdigest() != digest.hex:
            self.refuse_corrupt(digest)
        return data

    def verify(self, digest: Digest) -> bool:
        """Re-hash a stored object; False (and quarantined) if its bytes do not match its name."""
        try:
            data = self.packs.read(digest.hex)
        except IntegrityError:  # its pack record is lost, recorded as damage: nothing left to quarantine
            return False
        if data is not None:
            actual = hashlib.sha256(data).hexdigest()
        else:
            try:
                actual = sha256_file(self._path_s(digest.hex))
            except FileNotFoundError:
                raise self.not_found(digest) from None
        if actual != digest.hex:
            self.quarantine(digest)
            return False
        return True

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every stored object, in digest order."""
        packed = [ObjectInfo(Digest(h), size, mtime) for h, size, mtime in self.packs.rows()]
        yield from heapq.merge(packed, loose.iter_objects(self.root), key=lambda i: i.digest.hex)

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        if ref.is_full:
            return Digest(ref.prefix)
        matches = sorted(loose.with_prefix(self.root, ref.prefix) | set(self.packs.with_prefix(ref.prefix)))
        if not matches:
            moved = sorted({p.name.partition(".")[0] for p in self.quarantine_dir.glob(f"{ref.prefix}*.*")})
            if len(moved) == 1:
                raise self.not_found(Digest(moved[0]))
            raise NotFound(f"no object matches sha256:{ref.prefix}", hint="list objects with `labvault object ls`")
        if len(matches) > 1:
            raise AmbiguousReference(f"sha256:{ref.prefix}", [f"sha256:{m}" for m in matches])
        return Digest(matches[0])
