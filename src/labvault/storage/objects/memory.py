"""An in-memory object store: the twin the contract suite and fast unit tests use."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from labvault.entities import ObjectInfo
from labvault.errors import AmbiguousReference, IntegrityError, NotFound
from labvault.refs import Digest, parse_digest
from labvault.storage.contained import replace_file
from labvault.storage.objects.protocol import BasicHousekeeping, MaterializeMode

__all__ = ["MemoryObjectStore"]


class MemoryObjectStore(BasicHousekeeping):
    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._quarantined: set[str] = set()
        self._mutex = threading.RLock()
        # A batch belongs to the thread that opened it, as in the local store: (depth, pending).
        self._local = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        if getattr(self._local, "depth", 0) == 0:
            self._local.depth = 0
            self._local.pending = {}
        self._local.depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                pending, self._local.pending = self._local.pending, {}
                if ok:
                    now = time.time()
                    with self._mutex:
                        for hexd, data in pending.items():
                            self._objects[hexd] = (data, now)

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(hashlib.sha256(data).hexdigest())
        with self.batch(), self._mutex:
            if digest.hex in self._objects:
                self._objects[digest.hex] = (self._objects[digest.hex][0], time.time())
            else:
                self._local.pending[digest.hex] = bytes(data)
        return digest

    def put_file(self, path: Path) -> Digest:
        return self.put_bytes(Path(path).read_bytes())

    def put_stream(self, src: BinaryIO) -> Digest:
        return self.put_bytes(src.read())

    def has(self, digest: Digest) -> bool:
        return digest.hex in self._objects

    def _get(self, digest: Digest) -> bytes:
        try:
            return self._objects[digest.hex][0]
        except KeyError:
            if digest.hex in self._quarantined:
                raise IntegrityError(f"object {digest} is corrupt: it was quarantined") from None
            raise NotFound(f"object {digest} is not stored") from None

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        data = self._get(digest)
        if verify and hashlib.sha256(data).hexdigest() != digest.hex:
            del self._objects[digest.hex]
            self._quarantined.add(digest.hex)
            raise IntegrityError(f"object {digest} is corrupt; quarantined")
        return data

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        return io.BytesIO(self.get_bytes(digest, verify=verify))

    def verify(self, digest: Digest) -> bool:
        try:
            self.get_bytes(digest)
        except IntegrityError:
            return False
        return True

    def touch(self, digest: Digest) -> None:
        with self._mutex:
            if digest.hex in self._objects:
                self._objects[digest.hex] = (self._objects[digest.hex][0], time.time())

    def info(self, digest: Digest) -> ObjectInfo:
        data = self._get(digest)
        return ObjectInfo(digest, len(data), self._objects[digest.hex][1])

    def iter_objects(self) -> Iterator[ObjectInfo]:
        for hexd, (data, mtime) in sorted(self._objects.items()):
            yield ObjectInfo(Digest(hexd), len(data), mtime)

    def delete(self, digest: Digest) -> None:
        self._objects.pop(digest.hex, None)

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        matches = sorted(h for h in self._objects if h.startswith(ref.prefix))
        if not matches:
            raise NotFound(f"no object matches sha256:{ref.prefix}")
        if len(matches) > 1:
            raise AmbiguousReference(f"sha256:{ref.prefix}", [f"sha256:{m}" for m in matches])
        return Digest(matches[0])

    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        replace_file(dest, self.get_bytes(digest))  # verified before anything is written

    def corrupt_for_tests(self, digest: Digest, data: bytes) -> None:
        self._objects[digest.hex] = (data, self._objects[digest.hex][1])
