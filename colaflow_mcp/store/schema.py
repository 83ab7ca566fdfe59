"""Schema: create missing tables and add missing columns on start; never drops data."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from colaflow_mcp.store import tables  # noqa: F401  (registers the tables' metadata)

logger = logging.getLogger(__name__)


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables and add missing columns; never drops data."""
    async with engine.begin() as conn:
        await conn.run_sync(_create_and_upgrade)


def _create_and_upgrade(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn, checkfirst=True)
    insp = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        existing = {c["name"] for c in insp.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            logger.info("schema upgrade: adding %s.%s", table.name, column.name)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {_column_ddl(conn, column)}")


def _column_ddl(conn: Connection, column: Any) -> str:
    """A column definition that existing rows can take: NOT NULL only with a default."""
    type_sql = column.type.compile(dialect=conn.dialect)
    ddl = f"{column.name} {type_sql}"
    default = column.default
    if default is not None and default.is_scalar and isinstance(default.arg, str | int | float):
        literal = default.arg
        if isinstance(literal, str):
            literal = "'" + literal.replace("'", "''") + "'"
        ddl += f" DEFAULT {literal}"
        if not column.nullable:
            ddl += " NOT NULL"
    return ddl
