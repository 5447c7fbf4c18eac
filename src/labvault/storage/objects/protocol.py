"""The object store protocol: immutable bytes named by their sha256.

Every implementation (local directory, memory, fsspec remote, HTTP client) passes the same contract
suite in ``tests/contracts/``. The maintenance part of the protocol (``gc_lock``, ``compact``,
``iter_temp_files``, ``lost_packs``, ``check_packs``, ``sweep_dead_temp_files``, ``sweep_quarantine``)
has the defaults of a store that keeps no packs, temp files, quarantine or lock file of its own in
:class:`BasicHousekeeping`, so that services never ask which store they hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from labvault.entities import ObjectInfo
from labvault.refs import Digest

__all__ = ["BasicHousekeeping", "MaterializeMode", "ObjectStore"]

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

    # -- maintenance (fsck, gc, run deletion) ---------------------------------------------------
    def verify(self, digest: Digest) -> bool:
        """Re-hash a stored object; False (and quarantined) if its bytes do not match its name."""
        ...

    def touch(self, digest: Digest) -> None:
        """Refresh an object's age so that gc keeps it for a full grace period (call inside ``batch()``)."""
        ...

    def gc_lock(self, *, timeout: float) -> AbstractContextManager[None]:
        """Held exclusively by gc; ``batch()`` holds it shared, so gc never deletes what a writer re-puts."""
        ...

    def compact(self) -> int:
        """Reclaim the space of deleted objects that share a file with live ones; the bytes reclaimed."""
        ...

    def iter_temp_files(self) -> Iterator[tuple[Path, float]]:
        """Leftover temp files of interrupted writes, with their modification times."""
        ...

    def lost_packs(self) -> list[str]:
        """Names of pack files that the store's index lists but that are missing or unreadable."""
        ...

    def check_packs(self) -> tuple[list[str], list[str]]:
        """Read every pack's header and record framing: ``(problems, hex digests of corrupt records)``."""
        ...

    def sweep_dead_temp_files(self, *, remove: bool) -> tuple[int, int]:
        """Count (and with ``remove``, delete) temp files no live writer holds: ``(files, bytes)``."""
        ...

    def sweep_quarantine(self, *, cutoff: float | None, remove: bool) -> tuple[int, int]:
        """Count (and with ``remove``, delete) quarantined files set aside before ``cutoff`` (all if None)."""
        ...


class BasicHousekeeping:
    """The maintenance defaults of a store with no packs, temp files or lock file of its own.

    Such a store (memory, fsspec) cannot lock out a concurrent writer across processes, so gc relies
    on its grace period alone there.
    """

    def gc_lock(self, *, timeout: float) -> AbstractContextManager[None]:
        return nullcontext()

    def compact(self) -> int:
        return 0

    def iter_temp_files(self) -> Iterator[tuple[Path, float]]:
        return iter(())

    def lost_packs(self) -> list[str]:
        return []

    def check_packs(self) -> tuple[list[str], list[str]]:
        return [], []

    def sweep_dead_temp_files(self, *, remove: bool) -> tuple[int, int]:
        return 0, 0

    def sweep_quarantine(self, *, cutoff: float | None, remove: bool) -> tuple[int, int]:
        return 0, 0
