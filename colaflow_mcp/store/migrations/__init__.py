"""Alembic migrations of the colaflow-mcp schema; run them through ``store.migrate``."""
