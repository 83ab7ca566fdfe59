"""Alembic migrations of the colaflow-mcp schema; run them through ``store.migrate``."""

# Where Alembic records the revision (here, not in ``store.migrate``, so that ``env.py``
# reads it without importing the module that runs it: no import cycle).
VERSION_TABLE = "cola_alembic_version"
