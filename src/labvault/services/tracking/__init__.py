"""Tracking: runs, params, metric histories, artifacts, and what every run captures."""

from labvault.services.tracking.handle import ActiveRun, RunKilled
from labvault.services.tracking.service import Tracking

__all__ = ["ActiveRun", "RunKilled", "Tracking"]
