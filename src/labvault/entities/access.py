"""Values of the team server's access control: API tokens and their roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ROLES", "ApiToken", "role_allows"]

#: Each role can do what the roles before it can.
ROLES: tuple[str, ...] = ("reader", "writer", "maintainer", "admin")


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` is ``needed`` or above it."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A token as stored: never its secret, only its id (the public half) and who holds it."""

    id: str
    user: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"
