"""SQLAlchemy Core tables, one module per aggregate; all share one ``MetaData``."""

from labvault.storage.meta.tables.core import metadata, object_refs, vault_meta
from labvault.storage.meta.tables.data import data_snapshots

__all__ = ["data_snapshots", "metadata", "object_refs", "vault_meta"]
