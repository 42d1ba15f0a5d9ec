"""Alembic's entry point: migrate the connection that :class:`~deepaas_like.database.Database` opened."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
