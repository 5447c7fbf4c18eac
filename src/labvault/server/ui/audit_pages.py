"""``/audit``: the audit log, newest first, a page at a time, and whether its hash chain verifies.

The page reads through ``vault.registry.audit`` as ``GET /api/v1/audit`` and ``/api/v1/audit/verify`` do.
The log service pages by a limit only, so page N reads its first ``N x per`` events (newest first)
and shows the last ``per`` of them; pages stop at the newest :data:`MAX_READ` events (a filter
reaches older ones), so that no request reads more than that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from labvault.entities import AuditEvent, format_time, json_safe
from labvault.server.deps import Caller
from labvault.server.ui import render
from labvault.server.ui.session import page_caller, protect

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(page_caller("reader"))]

PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_PAGE = 10_000
#: The most events one page request reads (pages go back this far from the newest).
MAX_READ = 100_000


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event as the page shows it: every field already a string (the template escapes them)."""

    seq: int
    at: str
    actor: str
    action: str
    subject: str
    before: str
    after: str
    details: tuple[tuple[str, str], ...]
    hash: str
    policy_hash: str


def _row(event: AuditEvent) -> EventRow:
    # Strings as they are (the template escapes them), anything else as compact JSON.
    details = tuple(
        (key, value if isinstance(value, str) else json.dumps(json_safe(value), sort_keys=True, ensure_ascii=False))
        for key, value in sorted(event.details.items())
        if value is not None
    )
    return EventRow(
        seq=event.seq,
        at=format_time(event.at),
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        before=event.before or "",
        after=event.after or "",
        details=details,
        hash=f"sha256:{event.hash}",
        policy_hash=f"sha256:{event.policy_hash}" if event.policy_hash else "",
    )


def _link(filters: dict[str, Any], page: int) -> str:
    query = {k: v for k, v in {**filters, "page": page}.items() if v not in (None, "")}
    return "/audit?" + urlencode(query) if query else "/audit"


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    who: Reader,
    action: Annotated[str | None, Query(max_length=32)] = None,
    subject: Annotated[str | None, Query(max_length=600)] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = PER_PAGE,
) -> HTMLResponse:
    """The audit log newest first (filtered by action and subject prefix), and the chain's verification."""
    action = action.strip() if action else None
    subject = subject.strip() if subject else None
    audit = who.vault.registry.audit
    start = (page - 1) * per
    # One more than the page holds: whether a next page exists, without counting the whole log.
    end = min(start + per, MAX_READ)
    events = audit.events(subject_prefix=subject or None, action=action or None, limit=end + 1, newest_first=True)
    shown = events[start:end]
    report = audit.verify()
    filters = {"action": action, "subject": subject, "per": per if per != PER_PAGE else None}
    page_response = render(
        request,
        "audit/index.html",
        rows=[_row(e) for e in shown],
        report=report,
        action=action or "",
        subject=subject or "",
        page=page,
        per=per,
        per_default=PER_PAGE,
        first=start + 1,
        last=start + len(shown),
        filtered=bool(action or subject),
        prev_url=_link(filters, page - 1) if page > 1 else None,
        next_url=_link(filters, page + 1) if len(events) > end and end < MAX_READ and page < MAX_PAGE else None,
        capped=len(events) > end and end >= MAX_READ,
        max_read=MAX_READ,
    )
    protect(page_response)
    return page_response
