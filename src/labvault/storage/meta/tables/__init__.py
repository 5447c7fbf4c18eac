"""SQLAlchemy Core tables, one module per aggregate; all share one ``MetaData``."""

from labvault.storage.meta.tables import access, envelopes, pipelines, registry  # noqa: F401  (registers their tables on `metadata`)
from labvault.storage.meta.tables.core import metadata, object_refs, vault_meta
from labvault.storage.meta.tables.data import data_snapshots
from labvault.storage.meta.tables.runs import (
    run_artifacts,
    run_latest,
    run_metrics,
    run_params,
    run_tags,
    runs,
)

__all__ = [
    "data_snapshots",
    "metadata",
    "object_refs",
    "run_artifacts",
    "run_latest",
    "run_metrics",
    "run_params",
    "run_tags",
    "runs",
    "vault_meta",
]
