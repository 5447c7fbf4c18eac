"""Placeholder: filled in by the client work."""

from __future__ import annotations

from typing import Any

__all__ = ["ServerData"]


class ServerData:
    def __init__(self, owner: Any) -> None:
        self.owner = owner
