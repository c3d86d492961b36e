"""The fleet database's Alembic migrations (run by :func:`pumpfleet.fleet_schema.migrate`)."""
