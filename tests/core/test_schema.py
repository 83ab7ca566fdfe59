"""Start-up brings any earlier schema to head, keeping existing data."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from colaflow_mcp.store import migrate
from colaflow_mcp.store.engine import Database, async_url

pytestmark = pytest.mark.anyio


async def test_a_build_older_than_the_release_is_completed_and_stamped(
        any_database_url: str) -> None:
    db = Database(any_database_url)
    try:
        async with db.write_engine.begin() as conn:
            # An older schema: tenant without name, no other tables.
            await conn.execute(text(
                "CREATE TABLE tenant (id VARCHAR(36) PRIMARY KEY, slug VARCHAR(64) UNIQUE, "
                "created_at TIMESTAMP)"))
            await conn.execute(text(
                "INSERT INTO tenant (id, slug, created_at) VALUES ('t1', 'acme', "
                "CURRENT_TIMESTAMP)"))
        await db.create_schema()
        await db.create_schema()  # idempotent
        async with db.engine.connect() as conn:
            cols = await conn.run_sync(
                lambda c: {x["name"] for x in inspect(c).get_columns("tenant")})
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            rows = (await conn.execute(text("SELECT id, slug FROM tenant"))).all()
        assert "name" in cols
        assert {"pending_change", "api_key", "project", "issue", "comment"} <= tables
        assert [tuple(r) for r in rows] == [("t1", "acme")]
        assert (await migrate.current(db.url)).at_head
    finally:
        await db.dispose()


def test_plain_urls_get_async_drivers() -> None:
    assert async_url("sqlite:///x.db").startswith("sqlite+aiosqlite:///")
    assert async_url("postgresql://u@h:5432/db") == "postgresql+asyncpg://u@h:5432/db"
    assert async_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://h/db")
