"""Placeholder: tracking through a server (spooled writes), filled in by the client work."""

from __future__ import annotations

__all__ = ["TrackingWrites"]


class TrackingWrites:
    """The write side of runs through a server (create, log, end); :class:`ServerRuns` inherits it."""
