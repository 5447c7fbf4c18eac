"""``/api/v1/audit`` (log, verify) and ``/api/v1/lineage``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from labvault.server.deps import Caller, caller
from labvault.server.encode import to_json

__all__ = ["router"]

router = APIRouter()
Reader = Annotated[Caller, Depends(caller("reader"))]


@router.get("/audit", tags=["audit"], summary="Audit events, newest first")
def audit_log(
    who: Reader,
    subject: Annotated[str | None, Query(max_length=600)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Any:
    events = who.vault.registry.audit.events(subject_prefix=subject, action=action, limit=limit, newest_first=True)
    return to_json(events)


@router.get("/audit/verify", tags=["audit"], summary="Re-hash the whole chain (ok false names the first bad event)")
def audit_verify(who: Reader, against: Annotated[str | None, Query(max_length=200)] = None) -> Any:
    report = who.vault.registry.audit.verify(against=against)
    return {
        "ok": report.ok,
        "events": report.events,
        "head": report.head,
        "first_bad": report.first_bad,
        "problems": list(report.problems),
        "notes": list(report.notes),
    }


@router.get("/lineage", tags=["lineage"], summary="Lineage of a run, snapshot or model version, either way")
def lineage(
    who: Reader,
    ref: Annotated[str, Query(max_length=600)],
    direction: Literal["upstream", "downstream"] | None = None,
    depth: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> Any:
    service = who.vault.lineage
    walked = service.walk(ref, direction=direction or service.default_direction(ref), depth=depth)
    return to_json(walked)


@router.get("/lineage/diff", tags=["lineage"], summary="What differs in the lineage of two model versions or runs")
def lineage_diff(
    who: Reader, a: Annotated[str, Query(max_length=600)], b: Annotated[str, Query(max_length=600)]
) -> Any:
    return who.vault.lineage.diff(a, b).to_json()
