"""Alembic environment: labvault always hands in an open connection (see MetaStore.migrate)."""

from alembic import context

from labvault.storage.meta.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
)
with context.begin_transaction():
    context.run_migrations()
