"""The object store protocol: immutable bytes named by their sha256.

Every implementation (local directory, memory, fsspec remote, HTTP client) passes the same contract
suite in ``tests/contracts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from labvault.entities import ObjectInfo
from labvault.refs import Digest

__all__ = ["MaterializeMode", "ObjectStore"]

MaterializeMode = Literal["copy", "hardlink", "reflink"]


@runtime_checkable
class ObjectStore(Protocol):
    def put_bytes(self, data: bytes) -> Digest:
        """Store ``data``; a no-op (that refreshes the object's age) if it is already stored."""
        ...

    def put_file(self, path: Path) -> Digest:
        """Store a file's bytes, hashing while copying (one read pass)."""
        ...

    def has(self, digest: Digest) -> bool: ...

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        """A read-only file object; with ``verify``, reading to the end raises on a hash mismatch."""
        ...

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes: ...

    def info(self, digest: Digest) -> ObjectInfo: ...

    def iter_objects(self) -> Iterator[ObjectInfo]: ...

    def delete(self, digest: Digest) -> None: ...

    def resolve_prefix(self, prefix: str) -> Digest:
        """The one stored digest starting with ``prefix`` (8+ hex digits), else NotFound/Ambiguous."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group puts so that durability is paid once for the whole batch.

        Objects put inside the block become visible when it exits without error.
        """
        ...

    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        """Write the object's verified bytes to ``dest`` (atomically), as a copy, hardlink or reflink."""
        ...
