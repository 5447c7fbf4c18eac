"""Data snapshot values: snapshots, manifests, diffs, status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from labvault.entities.core import format_time
from labvault.refs import Digest

__all__ = [
    "CheckoutResult",
    "ColumnDrift",
    "DataDiff",
    "DatasetStatus",
    "Manifest",
    "Snapshot",
    "SnapshotFile",
    "SnapshotLink",
    "TabularChange",
]


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One file of a snapshot; ``record_count``/``schema`` only for tabular files."""

    path: str
    sha256: Digest
    size: int
    record_count: int | None = None
    schema: tuple[tuple[str, str], ...] | None = None  # (column, type) in file order
    note: str | None = None  # e.g. why tabular stats were skipped

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.path, "sha256": str(self.sha256), "size": self.size}
        if self.record_count is not None:
            doc["record_count"] = self.record_count
        if self.schema is not None:
            doc["schema"] = [{"name": n, "type": t} for n, t in self.schema]
        if self.note:
            doc["note"] = self.note
        return doc


@dataclass(frozen=True, slots=True)
class SnapshotLink:
    """A symbolic link inside a snapshot, recorded as a link and never followed."""

    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable dataset version ``data:<name>@v<version>``."""

    name: str
    version: int
    content_hash: Digest  # the root tree
    kind: str  # "file" (a one-entry tree) or "dir"
    storage_uri: str
    file_count: int
    total_bytes: int
    tabular: bool
    record_count: int | None
    schema_hash: str | None
    created_at: datetime
    created_by: str
    message: str = ""
    source_url: str | None = None
    source_version: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def ref(self) -> str:
        return f"data:{self.name}@v{self.version}"

    def to_json(self) -> dict[str, object]:
        """The manifest's summary keys (``files`` are added by the manifest)."""
        doc: dict[str, object] = {
            "id": self.id,
            "ref": self.ref,
            "dataset_name": self.name,
            "version": f"v{self.version}",
            "storage_uri": self.storage_uri,
            "file_count": self.file_count,
            "total_bytes": self.total_bytes,
            "tabular": self.tabular,
            "record_count": self.record_count,
            "schema_hash": f"sha256:{self.schema_hash}" if self.schema_hash else None,
            "content_hash": str(self.content_hash),
            "created_at": format_time(self.created_at),
            "created_by": self.created_by,
            "message": self.message,
        }
        if self.source_url is not None:
            doc["source_url"] = self.source_url
            doc["source_version"] = self.source_version
        if self.notes:
            doc["notes"] = list(self.notes)
        return doc


@dataclass(frozen=True, slots=True)
class Manifest:
    """A snapshot with its files: what ``data show`` prints and ``data manifest`` exports."""

    snapshot: Snapshot
    files: tuple[SnapshotFile, ...]
    links: tuple[SnapshotLink, ...] = ()

    def to_json(self) -> dict[str, object]:
        doc = self.snapshot.to_json()
        doc["files"] = [f.to_json() for f in self.files]
        if self.links:
            doc["links"] = [{"path": link.path, "target": link.target} for link in self.links]
        return doc


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """Drift of one column between two versions of a tabular file.

    ``before``/``after`` hold the statistics (numeric: count, nulls, mean, std, min, max;
    categorical: count, null_rate, distinct, top). ``psi`` is the population stability index
    (numeric columns only; None when it cannot be computed).
    """

    column: str
    kind: str  # "numeric" | "categorical"
    before: dict[str, object]
    after: dict[str, object]
    psi: float | None = None
    top_changes: tuple[tuple[str, float, float], ...] = ()  # (value, freq before, freq after)
    new_values: tuple[str, ...] = ()  # categorical: values only ``after`` has, most frequent first
    vanished_values: tuple[str, ...] = ()  # categorical: values only ``before`` has

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "column": self.column,
            "kind": self.kind,
            "before": self.before,
            "after": self.after,
            "psi": self.psi,
        }
        if self.kind == "categorical":
            doc["top_changes"] = [{"value": v, "before": a, "after": b} for v, a, b in self.top_changes]
            doc["new_values"] = list(self.new_values)
            doc["vanished_values"] = list(self.vanished_values)
        return doc


@dataclass(frozen=True, slots=True)
class TabularChange:
    """The schema, record-count and per-column change of one tabular file."""

    path: str
    record_count_before: int | None
    record_count_after: int | None
    columns_added: tuple[str, ...] = ()
    columns_removed: tuple[str, ...] = ()
    columns_retyped: tuple[tuple[str, str, str], ...] = ()  # (column, type before, type after)
    columns: tuple[ColumnDrift, ...] = ()

    @property
    def schema_changed(self) -> bool:
        return bool(self.columns_added or self.columns_removed or self.columns_retyped)

    @property
    def max_psi(self) -> float | None:
        values = [c.psi for c in self.columns if c.psi is not None]
        return max(values) if values else None

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "record_count": {"before": self.record_count_before, "after": self.record_count_after},
            "schema_changed": self.schema_changed,
            "columns_added": list(self.columns_added),
            "columns_removed": list(self.columns_removed),
            "columns_retyped": [{"column": c, "before": a, "after": b} for c, a, b in self.columns_retyped],
            "max_psi": self.max_psi,
            "columns": [c.to_json() for c in self.columns],
        }


@dataclass(frozen=True, slots=True)
class DataDiff:
    """What changed from snapshot ``a`` to snapshot ``b`` (the registry's drift gate reads it)."""

    a: str  # data:<name>@vN
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]
    tabular: tuple[TabularChange, ...] = ()
    record_count_before: int | None = None
    record_count_after: int | None = None

    @property
    def schema_changed(self) -> bool:
        return any(t.schema_changed for t in self.tabular)

    @property
    def max_psi(self) -> float | None:
        values = [p for t in self.tabular if (p := t.max_psi) is not None]
        return max(values) if values else None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "added": list(self.added),
            "removed": list(self.removed),
            "modified": list(self.modified),
            "record_count": {"before": self.record_count_before, "after": self.record_count_after},
            "schema_changed": self.schema_changed,
            "max_psi": self.max_psi,
            "tabular": [t.to_json() for t in self.tabular],
        }


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    """How a dataset's working copy differs from the snapshot its lock entry names."""

    path: str  # relative to the project root
    ref: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    changing: tuple[str, ...] = ()  # changed while being hashed: re-run when writers are done
    missing: bool = False  # the dataset path itself is gone

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.modified or self.changing or self.missing)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "ref": self.ref,
            "clean": self.clean,
            "missing": self.missing,
            "added": list(self.added),
            "removed": list(self.removed),
            "modified": list(self.modified),
            "changing": list(self.changing),
        }


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    """What ``data checkout`` did to one destination."""

    ref: str
    path: str
    written: int
    removed: int
    unchanged: int

    def to_json(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "path": self.path,
            "written": self.written,
            "removed": self.removed,
            "unchanged": self.unchanged,
        }
