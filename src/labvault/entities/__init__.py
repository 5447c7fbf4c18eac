"""Entities: frozen values that cross layers. No SQLAlchemy, no pydantic in here.

One module per aggregate; everything is re-exported here.
"""

from labvault.entities.core import FsckReport, GcReport, ObjectInfo, format_time, json_safe, utcnow
from labvault.entities.data import (
    CheckoutResult,
    ColumnDrift,
    DataDiff,
    DatasetStatus,
    Manifest,
    Snapshot,
    SnapshotFile,
    SnapshotLink,
    TabularChange,
)
from labvault.entities.registry import (
    AliasMove,
    AuditEvent,
    AuditReport,
    Decision,
    GateResult,
    ModelVersion,
    RegisteredModel,
)
from labvault.entities.runs import RUN_STATUSES, Artifact, MetricPoint, Run, RunStatus

__all__ = [
    "RUN_STATUSES",
    "AliasMove",
    "Artifact",
    "AuditEvent",
    "AuditReport",
    "CheckoutResult",
    "ColumnDrift",
    "DataDiff",
    "DatasetStatus",
    "Decision",
    "FsckReport",
    "GateResult",
    "GcReport",
    "Manifest",
    "MetricPoint",
    "ModelVersion",
    "ObjectInfo",
    "RegisteredModel",
    "Run",
    "RunStatus",
    "Snapshot",
    "SnapshotFile",
    "SnapshotLink",
    "TabularChange",
    "format_time",
    "json_safe",
    "utcnow",
]
