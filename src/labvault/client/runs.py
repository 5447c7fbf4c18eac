"""Placeholder: filled in by the client work."""

from __future__ import annotations

from typing import Any

from labvault.client.tracking import TrackingWrites

__all__ = ["ServerRuns"]


class ServerRuns(TrackingWrites):
    def __init__(self, owner: Any) -> None:
        self.owner = owner
