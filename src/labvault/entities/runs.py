"""Tracking values: runs, their artifacts and metric points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from labvault.refs import Digest

__all__ = ["RUN_STATUSES", "Artifact", "MetricPoint", "Run", "RunStatus"]


#: A run is ``running`` until it ends ``finished``, ``failed`` (an error or a non-zero exit) or
#: ``killed`` (SIGINT/SIGTERM, or a wrapped command killed by a signal).
RUN_STATUSES = ("running", "finished", "failed", "killed")
RunStatus = Literal["running", "finished", "failed", "killed"]


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file or a folder a run stored: a blob, or a tree object (storage/objects/tree.py)."""

    name: str
    digest: Digest
    kind: Literal["file", "tree"]
    size: int
    path: str | None = None  # where it was logged from, as the user gave it


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One entry of a metric's append-only history."""

    key: str
    step: int
    timestamp: datetime
    value: float  # NaN and infinities come back as they were logged


@dataclass(frozen=True, slots=True)
class Run:
    """A run record: what ran, on what, how it ended, and what it logged.

    ``metrics`` holds the latest value of each metric (the highest step; the last written among
    equal steps). ``outputs`` are the artifacts declared with ``labvault run --output``; they are
    also in ``artifacts``. ``capture`` holds what was recorded without any code: git, command,
    environment digest, config files, seeds, stdout/stderr objects and capture warnings.
    """

    id: str
    project: str
    name: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None = None
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[Artifact, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    parent_id: str | None = None
    user: str = ""
    host: str = ""
    exit_code: int | None = None
    error: str | None = None
    seed: int | None = None
    deleted_at: datetime | None = None
    capture: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"run:{self.id}"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, None while running."""
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None
