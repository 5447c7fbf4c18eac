"""Who is calling: the bearer token, its role, and the vault acting as its user.

Every route names the role it needs with :func:`caller`; there is no route without one, except the
health checks and the schema. The vault a route gets acts as the token's user, so every record and
audit event names the authenticated identity, never a name the client sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request

from labvault.entities.access import ApiToken
from labvault.services.access import Access
from labvault.services.tracking.point_queue import PointQueue
from labvault.vault import Vault

__all__ = ["Caller", "ServerState", "authenticate", "caller"]


@dataclass
class ServerState:
    vault: Vault
    no_auth: bool = False
    _views: dict[str, Vault] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _points: PointQueue | None = None

    def points(self) -> PointQueue:
        """The process's writer of single-point log requests (group commit), started on first use."""
        with self._lock:
            if self._points is None:
                self._points = PointQueue(self.vault.runs)
            return self._points

    def close(self) -> None:
        with self._lock:
            points, self._points = self._points, None
        if points is not None:
            points.close()

    def vault_for(self, user: str) -> Vault:
        """The vault acting as ``user``: one per user, sharing the stores (users are few)."""
        with self._lock:
            view = self._views.get(user)
            if view is None:
                view = self._views[user] = self.vault.as_user(user)
            return view


@dataclass(frozen=True)
class Caller:
    token: ApiToken
    vault: Vault

    @property
    def user(self) -> str:
        return self.token.user


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.labvault
    return state


def authenticate(state: ServerState, header: str, needed: str) -> ApiToken:
    """The token of an ``Authorization`` header, refused (401/403) unless its role is ``needed`` or above."""
    if state.no_auth:  # only ever on a loopback address (labvault server --no-auth)
        return ApiToken("local", state.vault.user, "admin", datetime.now(UTC), state.vault.user, None, None)
    scheme, _, value = header.partition(" ")
    token = state.vault.access.authenticate(value.strip() if scheme.lower() == "bearer" else None)
    Access.require(token, needed)
    return token


def caller(needed: str) -> Callable[[Request], Caller]:
    """A dependency: the authenticated caller, refused (401/403) unless its role is ``needed`` or above."""

    def dependency(request: Request) -> Caller:
        state = _state(request)
        token = authenticate(state, request.headers.get("authorization", ""), needed)
        request.state.user = token.user
        return Caller(token=token, vault=state.vault_for(token.user))

    dependency.__name__ = f"needs_{needed}"
    return dependency
