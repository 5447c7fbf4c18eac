"""Model registry values: versions, aliases, gate results, decisions, audit events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labvault.refs import Digest

__all__ = ["AliasMove", "AuditEvent", "AuditReport", "Decision", "GateResult", "ModelVersion", "RegisteredModel"]


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
