"""Tracking: runs, params, metric histories, artifacts, and what every run captures.

The names below load on first use: ``runs show`` reads a run through :mod:`.export` and
:mod:`.liveness` without importing the service (and SQLAlchemy with it).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labvault.services.tracking.handle import ActiveRun, RunKilled
    from labvault.services.tracking.service import Tracking

__all__ = ["ActiveRun", "RunKilled", "Tracking"]

_LAZY = {
    "ActiveRun": "labvault.services.tracking.handle",
    "RunKilled": "labvault.services.tracking.handle",
    "Tracking": "labvault.services.tracking.service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labvault.services.tracking' has no attribute {name!r}")
