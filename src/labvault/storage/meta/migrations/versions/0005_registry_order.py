"""Model registry: an index on each model's versions in semantic order.

The highest version of a model (read by every automatic registration) is then one index seek,
not a scan of all of the model's versions.

Revision ID: 0005_registry_order
Revises: 0004_registry
"""

from alembic import op

revision = "0005_registry_order"
down_revision = "0004_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_registry_versions_order", "registry_versions", ["model_id", "major", "minor", "patch"])


def downgrade() -> None:
    op.drop_index("ix_registry_versions_order", table_name="registry_versions")
