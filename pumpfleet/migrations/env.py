"""Alembic's environment for the fleet database: migrations run on the connection
:func:`pumpfleet.fleet_schema.migrate` passes in, never from a URL of their own."""

from alembic import context

from pumpfleet.fleet_schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
