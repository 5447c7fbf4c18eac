"""Version numbers are 64-bit: model version parts and data version numbers go up to 2^63-1.

PostgreSQL's INTEGER stops at 2^31-1, so these columns become BIGINT there (the index on
``registry_versions`` in semantic order is rebuilt with them). The strings that carry such a version
grow with it: ``X.Y.Z`` is up to 59 characters, ``project/model@X.Y.Z`` up to 317 and
``project/model@alias`` up to 386. SQLite's integers are 64-bit already and it does not enforce a
VARCHAR's length: nothing to do there.

Revision ID: 0006_bigint_versions
Revises: 0005_registry_order
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_bigint_versions"
down_revision = "0005_registry_order"
branch_labels = None
# It widens data_snapshots too, which the data branch creates.
depends_on = "0002_data"

_COLUMNS = (
    ("registry_versions", "major", sa.Integer(), sa.BigInteger()),
    ("registry_versions", "minor", sa.Integer(), sa.BigInteger()),
    ("registry_versions", "patch", sa.Integer(), sa.BigInteger()),
    ("data_snapshots", "version", sa.Integer(), sa.BigInteger()),
    ("registry_versions", "version", sa.String(40), sa.String(64)),
    ("object_refs", "owner", sa.String(300), sa.String(512)),
    ("audit_events", "subject", sa.String(300), sa.String(512)),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, old, new in _COLUMNS:
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, old, new in reversed(_COLUMNS):
        op.alter_column(table, column, type_=old, existing_type=new, existing_nullable=False)
