"""Signing in to the web UI: a token becomes an HttpOnly, SameSite session cookie; CSRF on every change.

Placeholder: the sign-in page, the cookie and the CSRF check are filled in by the web UI work.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from labvault.entities.access import ApiToken
from labvault.server.deps import Caller, ServerState

__all__ = ["page_caller", "router", "template_context"]

router = APIRouter(include_in_schema=False)


def page_caller(needed: str) -> Callable[[Request], Caller]:
    """A dependency for pages: the signed-in caller (redirected to /login when there is none)."""

    def dependency(request: Request) -> Caller:
        state: ServerState = request.app.state.labvault
        token = ApiToken("local", state.vault.user, "admin", datetime.now(UTC), state.vault.user, None, None)
        return Caller(token=token, vault=state.vault_for(token.user))

    dependency.__name__ = f"page_needs_{needed}"
    return dependency


def template_context(request: Request) -> dict[str, Any]:
    return {"user": getattr(request.state, "user", None), "csrf_token": ""}
