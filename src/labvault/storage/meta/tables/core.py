"""Foundation tables: vault facts and the object references that fsck and gc follow.

Every module whose rows point at objects also records those objects in ``object_refs`` (in the same
transaction), so that fsck and gc can find every referenced object without reading other modules'
tables. A ``tree`` reference covers everything reachable from that tree object.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, Index, MetaData, String, Table, Text

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

vault_meta = Table(
    "vault_meta",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

object_refs = Table(
    "object_refs",
    metadata,
    # A reference string: run:<id>, data:x@v3, project/model@X.Y.Z (up to 317 characters), ...
    Column("owner", String(512), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # blob | tree
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('blob', 'tree')", name="kind"),
    Index("ix_object_refs_digest", "digest"),
)
