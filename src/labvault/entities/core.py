"""Foundation values: objects, fsck and gc reports, time formatting, and the JSON form of NaN."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from labvault.refs import Digest

__all__ = ["FsckReport", "GcReport", "ObjectInfo", "format_time", "json_safe", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, as every output prints timestamps."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN and infinity, at any depth, as "NaN", "Infinity" or "-Infinity".

    The one encoding of the conventions, for every JSON labvault writes: command output, exported
    runs, a version's metrics.json and the audit chain (whose hashes depend on it byte for byte).
    Mapping keys become strings and tuples lists, as JSON has them.
    """
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


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
    quarantine_files: int = 0  # files in quarantine/ (`gc --quarantine` removes old ones; not a problem)
    quarantine_bytes: int = 0

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
    quarantine_removed: int = 0  # quarantined files older than the grace period (`--quarantine`)
    quarantine_bytes_removed: int = 0
