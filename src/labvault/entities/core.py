"""Foundation values: objects, fsck and gc reports, and time formatting."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from labvault.refs import Digest

__all__ = ["FsckReport", "GcReport", "ObjectInfo", "format_time", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, as every output prints timestamps."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    digest: Digest
    size: int
    mtime: float  # seconds since the epoch; gc's grace period reads it


@dataclass(frozen=True, slots=True)
class FsckReport:
    checked: int
    bytes_checked: int
    corrupt: tuple[Digest, ...] = ()
    missing: tuple[Digest, ...] = ()  # referenced by metadata, not stored
    quarantined: tuple[Digest, ...] = ()
    problems: tuple[str, ...] = field(default=())  # other findings, one line each
    stale_temp_files: int = 0  # temp files no live writer holds (gc removes them; not a problem)
    stale_temp_bytes: int = 0

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.missing or self.problems)


@dataclass(frozen=True, slots=True)
class GcReport:
    dry_run: bool
    deleted: tuple[Digest, ...]
    bytes_freed: int
    kept_referenced: int
    kept_young: int
    temp_files_removed: int
    pack_bytes_reclaimed: int = 0  # dead space cut out of packs by rewriting them
