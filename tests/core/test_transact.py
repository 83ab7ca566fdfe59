"""Database.transact: the decision path's transactions, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anyio
import pytest
from sqlmodel import Session, select

from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import Tenant

pytestmark = pytest.mark.anyio


async def _names(db: Database) -> list[str]:
    async with db.read() as s:
        return sorted(t.name for t in (await s.exec(select(Tenant))).all())


async def test_commits_on_return_and_rolls_back_on_error(any_database_url: str) -> None:
    db = Database(any_database_url)
    await db.create_schema()
    try:
        def add(name: str) -> str:
            def fn(s: Session) -> str:
                s.add(Tenant(slug=name, name=name))
                s.flush()
                return name
            return fn

        assert await db.transact(add("kept")) == "kept"

        def add_then_fail(s: Session) -> None:
            s.add(Tenant(slug="dropped", name="dropped"))
            s.flush()
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await db.transact(add_then_fail)
        assert await _names(db) == ["kept"]

        # A failure that leaves the connection out of step with SQLAlchemy (the
        # transaction ended under it) does not break the transactions after it.
        def end_under_it_then_fail(s: Session) -> None:
            s.add(Tenant(slug="lost", name="lost"))
            s.flush()
            s.connection().exec_driver_sql("ROLLBACK")
            raise RuntimeError("broken")

        with pytest.raises(Exception):  # noqa: B017 - the driver's error, or ours
            await db.transact(end_under_it_then_fail)
        assert await db.transact(add("after")) == "after"
        assert await _names(db) == ["after", "kept"]
    finally:
        await db.dispose()


async def test_a_cancelled_caller_does_not_abandon_a_started_sqlite_transaction(
    tmp_path: Path,
) -> None:
    # A reviewer's request cancelled mid-decision (client gone, shutdown) must neither leave
    # the transaction half-done nor break the next one. On SQLite the transaction runs on a
    # worker thread; (on PostgreSQL it runs on the event loop and is rolled back by
    # SQLAlchemy at the next await, like any other async transaction.)
    db = Database(f"sqlite:///{tmp_path / 'cancel.sqlite'}")
    await db.create_schema()
    try:
        inside, release = threading.Event(), threading.Event()

        def slow(s: Session) -> None:
            s.add(Tenant(slug="slow", name="slow"))
            s.flush()
            inside.set()
            release.wait(10)

        async with anyio.create_task_group() as tg:
            tg.start_soon(db.transact, slow)
            await anyio.to_thread.run_sync(inside.wait, 10)
            tg.cancel_scope.cancel()
            release.set()
        # The transaction ran to its end and committed, and the next one works.
        assert await _names(db) == ["slow"]
        assert await db.transact(lambda s: s.connection().exec_driver_sql(
            "SELECT 1").scalar()) == 1
    finally:
        await db.dispose()


async def test_cancelling_callers_mid_statement_leaves_no_stuck_connection(
    tmp_path: Path,
) -> None:
    # An MCP request cancelled while its statement runs (its session closed, the server
    # stopping) used to make SQLAlchemy terminate the aiosqlite connection with a close
    # task that could hang the event loop's close: the read and write sessions are shielded.
    before = asyncio.all_tasks()
    db = Database(f"sqlite:///{tmp_path / 'cancel-mid.sqlite'}")
    await db.create_schema()
    try:
        for i in range(20):
            entered = anyio.Event()

            async def write(i: int = i, entered: anyio.Event = entered) -> None:
                async with db.write() as s:
                    entered.set()
                    s.add(Tenant(slug=f"t{i}", name=f"t{i}"))
                    await s.flush()

            async def read(entered: anyio.Event = entered) -> None:
                async with db.read() as s:
                    entered.set()
                    await s.exec(select(Tenant))

            async with anyio.create_task_group() as tg:
                tg.start_soon(write if i % 2 == 0 else read)
                await entered.wait()
                tg.cancel_scope.cancel()  # lands while the statement is in flight
        # Every write finished whole (shielded), and the database still answers.
        assert await _names(db) == sorted(f"t{i}" for i in range(0, 20, 2))
    finally:
        await db.dispose()
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], [t.get_coro() for t in left]


async def test_a_begin_that_fails_does_not_break_the_next_transaction(tmp_path: Path) -> None:
    # BEGIN IMMEDIATE can fail (another process holds the write lock past the busy
    # timeout): the transaction functions' connection must not be left unusable.
    import sqlite3

    path = tmp_path / "locked.sqlite"
    db = Database(f"sqlite:///{path}")
    await db.create_schema()
    try:
        def shorten_busy_timeout(s: Session) -> None:
            s.connection().exec_driver_sql("PRAGMA busy_timeout=50")
        await db.transact(shorten_busy_timeout)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(Exception, match="locked"):
                await db.transact(lambda s: s.add(Tenant(slug="blocked", name="blocked")))
        finally:
            other.execute("ROLLBACK")
            other.close()

        def add(s: Session) -> None:
            s.add(Tenant(slug="next", name="next"))
        await db.transact(add)
        assert await _names(db) == ["next"]
    finally:
        await db.dispose()
