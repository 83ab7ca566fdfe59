"""The decision path's statements on asyncpg itself (store/native.py): inside the
transaction SQLAlchemy opened, and a connection found dead is run again on a fresh one."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlmodel import Session

from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.native import native
from tests.pgdb import _admin

pytestmark = pytest.mark.anyio


async def _postgres(any_database_url: str) -> Database:
    db = Database(any_database_url, pool_size=1)
    if db.is_sqlite:
        await db.dispose()
        pytest.skip("PostgreSQL only (on SQLite native() is None)")
    await db.create_schema()
    return db


def _backend(s: Session) -> Any:
    fast = native(s.connection())
    assert fast is not None
    (row,) = fast.fetch("SELECT pg_backend_pid() AS pid, txid_current_if_assigned() AS x")
    return row["pid"]


async def test_native_statements_run_in_the_sessions_transaction(
        any_database_url: str) -> None:
    db = await _postgres(any_database_url)

    def write_both_ways(s: Session) -> None:
        fast = native(s.connection())
        assert fast is not None  # the first statement of the transaction: BEGIN first
        fast.execute("CREATE TEMP TABLE t (v text) ON COMMIT PRESERVE ROWS")
        fast.execute("INSERT INTO t VALUES ($1)", "native")
        s.connection().execute(text("INSERT INTO t VALUES ('core')"))
        raise RuntimeError("roll back")

    try:
        with pytest.raises(RuntimeError):
            await db.transact(write_both_ways)

        def count(s: Session) -> int:
            fast = native(s.connection())
            assert fast is not None
            return len(fast.fetch(
                "SELECT 1 FROM pg_tables WHERE tablename = 't' AND schemaname LIKE 'pg_temp%'"))

        assert await db.transact(count) == 0  # the table went with the rollback
    finally:
        await db.dispose()


async def test_a_connection_that_died_is_replaced_and_the_transaction_run_again(
        any_database_url: str) -> None:
    db = await _postgres(any_database_url)
    runs: list[Any] = []

    def record(s: Session) -> Any:
        runs.append(None)
        return _backend(s)

    closed = anyio.Event()

    def watched(s: Session) -> Any:
        # Told when the client sees the server end the connection: the next transaction
        # then meets a connection known dead, not one whose end is still in flight.
        s.connection().connection.driver_connection.add_termination_listener(
            lambda _conn: closed.set())
        return _backend(s)

    try:
        first = await db.transact(watched)
        admin = await _admin()
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        with anyio.fail_after(10):
            await closed.wait()
        second = await db.transact(record)
        assert second != first
        assert len(runs) == 2  # met the dead connection, then ran on a new one
    finally:
        await db.dispose()


async def test_a_connection_ended_just_before_the_transaction_is_replaced(
        any_database_url: str) -> None:
    # No waiting for the client to notice the end: asyncpg may then report the closed
    # socket as an internal error; it is still a dead connection, and the transaction
    # runs again on a new one instead of failing (before: about 1 in 10 failed).
    db = await _postgres(any_database_url)
    try:
        for _ in range(20):
            first = await db.transact(_backend)
            admin = await _admin()
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", first)
            finally:
                await admin.close()
            assert await db.transact(_backend) != first
    finally:
        await db.dispose()
