"""Alembic environment: runs on the connection that ``store.migrate`` hands over.

There is no alembic.ini: ``colaflow_mcp.store.migrate`` builds the configuration, opens
the connection, takes the migration lock and begins the transaction; every revision then
runs inside that one transaction (PostgreSQL and SQLite both have transactional DDL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from colaflow_mcp.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from colaflow_mcp.store.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection) or context.is_offline_mode():
    raise RuntimeError("run migrations with `colaflow-mcp db upgrade` "
                       "(colaflow_mcp.store.migrate), not the alembic command")

context.configure(
    connection=connection,
    # For autogenerate (writing a revision) only; revisions never import the models.
    target_metadata=SQLModel.metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things: batch_alter_table copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
