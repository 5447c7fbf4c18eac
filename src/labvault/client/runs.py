"""Placeholder: filled in by the client work."""

from __future__ import annotations

from typing import Any

__all__ = ["ServerRuns"]


class ServerRuns:
    def __init__(self, owner: Any) -> None:
        self.owner = owner
