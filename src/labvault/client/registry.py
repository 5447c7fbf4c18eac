"""Placeholder: filled in by the client work."""

from __future__ import annotations

from typing import Any

__all__ = ["ServerAudit", "ServerLineage", "ServerRegistry"]


class ServerRegistry:
    def __init__(self, owner: Any) -> None:
        self.owner = owner


class ServerLineage:
    def __init__(self, owner: Any) -> None:
        self.owner = owner


class ServerAudit:
    def __init__(self, owner: Any) -> None:
        self.owner = owner
