"""Validating decoders: the JSON ``server/encode.py`` produces -> the entities a local vault returns.

What a server sends is untrusted input (DESIGN storage rule 7): every field is type-checked here, and a
document that does not fit is an :class:`~labvault.errors.ExternalError` naming what was wrong, never
a ``KeyError`` or an entity holding the wrong type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from labvault.entities import (
    AliasMove,
    Artifact,
    AuditEvent,
    AuditReport,
    Decision,
    GateResult,
    MetricPoint,
    ModelVersion,
    RegisteredModel,
    Run,
)
from labvault.errors import ExternalError, LabvaultError
from labvault.refs import Digest

__all__ = [
    "Doc",
    "alias_move",
    "artifact",
    "audit_event",
    "audit_report",
    "decision",
    "digest",
    "listing",
    "malformed",
    "metric_history",
    "model_version",
    "number",
    "registered_model",
    "run",
    "when",
]

T = TypeVar("T")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def malformed(what: str, why: str) -> ExternalError:
    return ExternalError(
        f"the server sent a malformed {what}: {why}", hint="is the server a labvault of the same version as this one?"
    )


class Doc:
    """A JSON object from the server, read field by field with the type each field must have."""

    def __init__(self, raw: Any, what: str) -> None:
        if not isinstance(raw, dict):
            raise malformed(what, f"expected an object, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.what = what

    def _get(self, key: str, types: type | tuple[type, ...], *, optional: bool) -> Any:
        value = self.raw.get(key)
        if value is None:
            if optional:
                return None
            raise malformed(self.what, f"{key!r} is missing")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise malformed(self.what, f"{key!r} is a {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        return cast(str, self._get(key, str, optional=False))

    def opt_text(self, key: str) -> str | None:
        return cast("str | None", self._get(key, str, optional=True))

    def integer(self, key: str) -> int:
        return cast(int, self._get(key, int, optional=False))

    def opt_integer(self, key: str) -> int | None:
        return cast("int | None", self._get(key, int, optional=True))

    def flag(self, key: str) -> bool:
        return cast(bool, self._get(key, bool, optional=False))

    def mapping(self, key: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self._get(key, dict, optional=True) or {})

    def items(self, key: str) -> list[Any]:
        return cast("list[Any]", self._get(key, list, optional=True) or [])

    def strs(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        if not all(isinstance(i, str) for i in items):
            raise malformed(self.what, f"{key!r} is not a list of strings")
        return tuple(items)

    def time(self, key: str) -> datetime:
        return when(self.text(key), self.what)

    def opt_time(self, key: str) -> datetime | None:
        text = self.opt_text(key)
        return None if text is None else when(text, self.what)

    def digest(self, key: str) -> Digest:
        return digest(self.text(key), self.what)


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def when(text: str, what: str = "timestamp") -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise malformed(what, f"{text[:40]!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def digest(text: str, what: str = "digest") -> Digest:
    try:
        return Digest(text.removeprefix("sha256:"))
    except LabvaultError:
        raise malformed(what, f"{text[:80]!r} is not sha256:<hex>") from None


def number(value: Any, what: str = "number") -> float:
    """A JSON number, or NaN/Infinity written as the conventions' strings."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise malformed(what, f"{value!r} is not a number")
    return float(value)


def listing(raw: Any, decode: Callable[[Any], T], what: str) -> list[T]:
    if not isinstance(raw, list):
        raise malformed(what, "expected a list")
    return [decode(item) for item in raw]


# -- registry ----------------------------------------------------------------------------------------
def model_version(raw: Any) -> ModelVersion:
    d = Doc(raw, "model version")
    return ModelVersion(
        project=d.text("project"),
        model=d.text("model"),
        version=d.text("version"),
        tree=d.digest("tree"),
        content=d.digest("content"),
        size=d.integer("size"),
        files=d.integer("files"),
        created_at=d.time("created_at"),
        created_by=d.text("created_by"),
        run_id=d.opt_text("run_id"),
        message=d.opt_text("message"),
        source=d.mapping("source"),
        notes=d.strs("notes"),
        archived_at=d.opt_time("archived_at"),
        aliases=d.strs("aliases"),
    )


def registered_model(raw: Any) -> RegisteredModel:
    d = Doc(raw, "model")
    aliases = d.mapping("aliases")
    if not all(isinstance(v, str) for v in aliases.values()):
        raise malformed("model", "aliases are not alias -> version")
    return RegisteredModel(
        project=d.text("project"),
        model=d.text("model"),
        created_at=d.time("created_at"),
        created_by=d.text("created_by"),
        versions=d.integer("versions"),
        latest=d.opt_text("latest"),
        aliases=aliases,
    )


def _gate(raw: Any) -> GateResult:
    d = Doc(raw, "gate result")
    output = d.opt_text("output")
    return GateResult(
        gate=d.text("gate"),
        name=d.text("name"),
        passed=d.flag("passed"),
        measured=d.raw.get("measured"),
        threshold=d.raw.get("threshold"),
        detail=d.opt_text("detail") or "",
        output=digest(output, "gate result") if output else None,
    )


def decision(raw: Any) -> Decision:
    d = Doc(raw, "decision")
    return Decision(
        ref=d.text("ref"),
        alias=d.text("alias"),
        action=d.text("action"),
        moved=d.flag("moved"),
        before=d.opt_text("before"),
        after=d.opt_text("after"),
        gates=tuple(_gate(g) for g in d.items("gates")),
        policy_hash=d.opt_text("policy_hash"),
        audit_seq=d.opt_integer("audit_seq"),
    )


def alias_move(raw: Any) -> AliasMove:
    d = Doc(raw, "alias move")
    gates = d.items("gates")
    if not all(isinstance(g, dict) for g in gates):
        raise malformed("alias move", "gates are not objects")
    return AliasMove(
        project=d.text("project"),
        model=d.text("model"),
        alias=d.text("alias"),
        action=d.text("action"),
        before=d.opt_text("before"),
        after=d.opt_text("after"),
        at=d.time("at"),
        actor=d.text("actor"),
        reason=d.opt_text("reason"),
        policy_hash=d.opt_text("policy_hash"),
        gates=tuple(gates),
        audit_seq=d.integer("audit_seq"),
    )


def audit_event(raw: Any) -> AuditEvent:
    d = Doc(raw, "audit event")
    return AuditEvent(
        seq=d.integer("seq"),
        at=d.time("at"),
        actor=d.text("actor"),
        action=d.text("action"),
        subject=d.text("subject"),
        before=d.opt_text("before"),
        after=d.opt_text("after"),
        policy_hash=d.opt_text("policy_hash"),
        details=d.mapping("details"),
        prev_hash=d.text("prev_hash"),
        hash=d.text("hash"),
    )


def audit_report(raw: Any) -> AuditReport:
    d = Doc(raw, "audit report")
    return AuditReport(
        ok=d.flag("ok"),
        events=d.integer("events"),
        head=d.opt_text("head"),
        problems=d.strs("problems"),
        first_bad=d.opt_integer("first_bad"),
        notes=d.strs("notes"),
    )


# -- runs ---------------------------------------------------------------------------------------------
def artifact(raw: Any) -> Artifact:
    d = Doc(raw, "artifact")
    kind = d.text("kind")
    if kind not in ("file", "tree"):
        raise malformed("artifact", f"kind {kind[:20]!r}")
    return Artifact(d.text("name"), d.digest("digest"), cast(Any, kind), d.integer("size"), d.opt_text("path"))


def run(raw: Any) -> Run:
    d = Doc(raw, "run")
    status = d.text("status")
    if status not in ("running", "finished", "failed", "killed"):
        raise malformed("run", f"status {status[:20]!r}")
    metrics = {str(k): number(v, "run metric") for k, v in d.mapping("metrics").items()}
    tags = d.mapping("tags")
    if not all(isinstance(v, str) for v in tags.values()):
        raise malformed("run", "tags are not strings")
    return Run(
        id=d.text("id"),
        project=d.text("project"),
        name=d.text("name"),
        status=cast(Any, status),
        started_at=d.time("started_at"),
        ended_at=d.opt_time("ended_at"),
        params=d.mapping("params"),
        metrics=metrics,
        tags=tags,
        inputs=d.strs("inputs"),
        outputs=tuple(artifact(a) for a in d.items("outputs")),
        artifacts=tuple(artifact(a) for a in d.items("artifacts")),
        parent_id=d.opt_text("parent_id"),
        user=d.opt_text("user") or "",
        host=d.opt_text("host") or "",
        exit_code=d.opt_integer("exit_code"),
        error=d.opt_text("error"),
        seed=d.opt_integer("seed"),
        deleted_at=d.opt_time("deleted_at"),
        capture=d.mapping("capture"),
    )


def metric_history(raw: Any) -> dict[str, list[MetricPoint]]:
    if not isinstance(raw, Mapping):
        raise malformed("metric history", "expected an object of key -> points")
    out: dict[str, list[MetricPoint]] = {}
    for key, points in raw.items():
        out[str(key)] = [
            MetricPoint(
                d.text("key"), d.integer("step"), d.time("timestamp"), number(d.raw.get("value"), "metric point")
            )
            for d in (Doc(p, "metric point") for p in listing(points, lambda p: p, "metric history"))
        ]
    return out
