"""Foundation: vault facts and object references.

Revision ID: 0001_foundation
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = ("foundation",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_meta",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "object_refs",
        sa.Column("owner", sa.String(300), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('blob', 'tree')", name="ck_object_refs_kind"),
    )
    op.create_index("ix_object_refs_digest", "object_refs", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_object_refs_digest", "object_refs")
    op.drop_table("object_refs")
    op.drop_table("vault_meta")
