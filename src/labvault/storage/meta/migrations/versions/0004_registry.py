"""Model registry: models, versions, aliases and their history, approvals, the audit chain.

Revision ID: 0004_registry
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_registry"
down_revision = "0001_foundation"
branch_labels = ("registry",)
depends_on = None

_TS = sa.DateTime(timezone=True)
GENESIS = "0:" + "0" * 64


def upgrade() -> None:
    op.create_table(
        "registry_models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.UniqueConstraint("project", "name", name="uq_registry_models_project_name"),
    )
    op.create_table(
        "registry_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registry_models.id"), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("major", sa.Integer, nullable=False),
        sa.Column("minor", sa.Integer, nullable=False),
        sa.Column("patch", sa.Integer, nullable=False),
        sa.Column("tree", sa.String(64), nullable=False),
        sa.Column("content", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("archived_at", _TS, nullable=True),
        sa.Column("archived_by", sa.String(300), nullable=True),
        sa.UniqueConstraint("model_id", "version", name="uq_registry_versions_model_version"),
    )
    op.create_table(
        "registry_aliases",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registry_models.id"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("registry_versions.id"), nullable=True),
        sa.Column("lock_version", sa.Integer, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(300), nullable=False),
    )
    op.create_table(
        "registry_alias_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registry_models.id"), nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version_id", sa.Integer, sa.ForeignKey("registry_versions.id"), nullable=True),
        sa.Column("to_version_id", sa.Integer, sa.ForeignKey("registry_versions.id"), nullable=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("policy_hash", sa.String(64), nullable=True),
        sa.Column("gates", sa.Text, nullable=False),
        sa.Column("audit_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_registry_alias_moves_model_alias", "registry_alias_moves", ["model_id", "alias", "id"])
    op.create_table(
        "registry_approvals",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("registry_versions.id"), primary_key=True),
        sa.Column("alias", sa.String(128), primary_key=True),
        sa.Column("actor", sa.String(300), primary_key=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("before", sa.Text, nullable=True),
        sa.Column("after", sa.Text, nullable=True),
        sa.Column("policy_hash", sa.String(64), nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # The chain head row: appends lock it (FOR UPDATE on PostgreSQL), so they are serialised.
    vault_meta = sa.table("vault_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(vault_meta, [{"key": "audit_head", "value": GENESIS}])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("registry_approvals")
    op.drop_index("ix_registry_alias_moves_model_alias", "registry_alias_moves")
    op.drop_table("registry_alias_moves")
    op.drop_table("registry_aliases")
    op.drop_table("registry_versions")
    op.drop_table("registry_models")
    op.execute("DELETE FROM vault_meta WHERE key = 'audit_head'")
