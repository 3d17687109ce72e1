"""Alembic environment: JobStore passes an open connection (inside its transaction) in
`config.attributes["connection"]`; offline/URL mode is not used."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
