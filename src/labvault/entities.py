"""Entities: frozen values that cross layers. No SQLAlchemy, no pydantic in here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from labvault.refs import Digest

__all__ = [
    "RUN_STATUSES",
    "Artifact",
    "CheckoutResult",
    "ColumnDrift",
    "DataDiff",
    "DatasetStatus",
    "FsckReport",
    "GcReport",
    "Manifest",
    "MetricPoint",
    "ObjectInfo",
    "Run",
    "Snapshot",
    "SnapshotFile",
    "SnapshotLink",
    "TabularChange",
    "format_time",
    "utcnow",
]


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


# -- model registry -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """An immutable registered version: ``project/model@1.2.0``, a tree in the object store."""

    project: str
    model: str
    version: str
    tree: Digest  # root tree: PROJECT/MODEL/VERSION/<files>
    content: Digest  # the VERSION folder's tree; equal content, equal digest
    size: int
    files: int
    created_at: datetime
    created_by: str
    run_id: str | None = None
    message: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    archived_at: datetime | None = None
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.model}@{self.version}"

    @property
    def name(self) -> str:
        return f"{self.project}/{self.model}"

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    project: str
    model: str
    created_at: datetime
    created_by: str
    versions: int
    latest: str | None
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.model}"


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate of a promotion policy: what was measured against what was required."""

    gate: str  # metric | check | from | drift | rollback_plan | approvals
    name: str  # e.g. "auc", "validation", "max_psi"
    passed: bool
    measured: Any = None
    threshold: Any = None
    detail: str = ""
    output: Digest | None = None  # a check's captured output, stored as an object

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "name": self.name,
            "passed": self.passed,
            "measured": self.measured,
            "threshold": self.threshold,
            "detail": self.detail,
            "output": str(self.output) if self.output else None,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a promotion, a check or a rollback."""

    ref: str  # project/model@version
    alias: str
    action: str  # promote | refuse | check | rollback | unset | noop
    moved: bool
    before: str | None
    after: str | None
    gates: tuple[GateResult, ...] = ()
    policy_hash: str | None = None
    audit_seq: int | None = None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)


@dataclass(frozen=True, slots=True)
class AliasMove:
    project: str
    model: str
    alias: str
    action: str  # promote | rollback | unset
    before: str | None
    after: str | None
    at: datetime
    actor: str
    reason: str | None
    policy_hash: str | None
    gates: tuple[dict[str, Any], ...]
    audit_seq: int


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    before: str | None
    after: str | None
    policy_hash: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    events: int
    head: str | None
    problems: tuple[str, ...] = ()
    first_bad: int | None = None
    notes: tuple[str, ...] = ()


# -- tracking -----------------------------------------------------------------------------------

#: A run is ``running`` until it ends ``finished``, ``failed`` (an error or a non-zero exit) or
#: ``killed`` (SIGINT/SIGTERM, or a wrapped command killed by a signal).
RUN_STATUSES = ("running", "finished", "failed", "killed")
RunStatus = Literal["running", "finished", "failed", "killed"]


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file or a folder a run stored: a blob, or a tree object (storage/objects/tree.py)."""

    name: str
    digest: Digest
    kind: Literal["file", "tree"]
    size: int
    path: str | None = None  # where it was logged from, as the user gave it


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One entry of a metric's append-only history."""

    key: str
    step: int
    timestamp: datetime
    value: float  # NaN and infinities come back as they were logged


@dataclass(frozen=True, slots=True)
class Run:
    """A run record: what ran, on what, how it ended, and what it logged.

    ``metrics`` holds the latest value of each metric (the highest step; the last written among
    equal steps). ``outputs`` are the artifacts declared with ``labvault run --output``; they are
    also in ``artifacts``. ``capture`` holds what was recorded without any code: git, command,
    environment digest, config files, seeds, stdout/stderr objects and capture warnings.
    """

    id: str
    project: str
    name: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None = None
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[Artifact, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    parent_id: str | None = None
    user: str = ""
    host: str = ""
    exit_code: int | None = None
    error: str | None = None
    seed: int | None = None
    deleted_at: datetime | None = None
    capture: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"run:{self.id}"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, None while running."""
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None


# -- data snapshots ------------------------------------------------------------------------------


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
