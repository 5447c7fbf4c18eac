"""The team server: API tokens (salted sha256, never the secret) and idempotency keys of retried requests.

Revision ID: 0008_server_tokens
Revises: 0007_pipelines
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_server_tokens"
down_revision = "0007_pipelines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('reader', 'writer', 'maintainer', 'admin')", name="ck_server_tokens_role"),
    )
    op.create_index("ix_server_tokens_user", "server_tokens", ["user"])
    op.create_table(
        "server_requests",
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'done')", name="ck_server_requests_state"),
    )


def downgrade() -> None:
    op.drop_table("server_requests")
    op.drop_index("ix_server_tokens_user", "server_tokens")
    op.drop_table("server_tokens")
