"""Entities: frozen values that cross layers. No SQLAlchemy, no pydantic in here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from labvault.refs import Digest

__all__ = [
    "RUN_STATUSES",
    "Artifact",
    "FsckReport",
    "GcReport",
    "MetricPoint",
    "ObjectInfo",
    "Run",
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

    ``metrics`` holds the latest value of each metric (the highest step; the last logged among
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
    capture: dict[str, Any] = field(default_factory=dict)

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
