"""Database.transact: the decision path's transactions, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from sqlmodel import Session, select

from colaflow_mcp.store.engine import INLINE_RUN, Database
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


async def test_a_short_transaction_runs_on_the_event_loop_when_it_cannot_wait(
    any_database_url: str,
) -> None:
    # ``short``: on SQLite, no thread hop when this process has no transaction in flight
    # and SQLite's writer lock is free at once; committed and rolled back as any other.
    db = Database(any_database_url)
    await db.create_schema()
    try:
        loop_thread = threading.current_thread()
        ran_on: list[threading.Thread] = []

        def add(name: str) -> Callable[[Session], str]:
            def fn(s: Session) -> str:
                ran_on.append(threading.current_thread())
                s.add(Tenant(slug=name, name=name))
                s.flush()
                return name
            return fn

        assert await db.transact(add("kept"), short=True) == "kept"

        def add_then_fail(s: Session) -> None:
            ran_on.append(threading.current_thread())
            s.add(Tenant(slug="dropped", name="dropped"))
            s.flush()
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await db.transact(add_then_fail, short=True)
        assert await db.transact(add("after"), short=True) == "after"
        assert await _names(db) == ["after", "kept"]
        if db.is_sqlite:
            assert ran_on == [loop_thread] * 3 and db.inline_transactions == 2
            # Not short: the worker thread, as before.
            await db.transact(add("threaded"))
            assert ran_on[-1] is not loop_thread
        else:  # PostgreSQL: through run_sync, as any transaction
            assert db.inline_transactions == 0
    finally:
        await db.dispose()


async def test_a_short_transaction_waits_for_another_writer_on_the_worker_thread(
    tmp_path: Path,
) -> None:
    # Another process (here: connection) holds SQLite's writer lock: the short transaction
    # must not wait on the event loop. It goes to the worker thread, waits there while the
    # loop runs on, and commits once when the lock is released.
    import sqlite3

    path = tmp_path / "busy.sqlite"
    db = Database(f"sqlite:///{path}")
    await db.create_schema()
    try:
        calls: list[threading.Thread] = []

        def add(s: Session) -> str:
            calls.append(threading.current_thread())
            s.add(Tenant(slug="waited", name="waited"))
            s.flush()
            return "waited"

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        done = anyio.Event()
        result: list[str] = []

        async def propose() -> None:
            result.append(await db.transact(add, short=True))
            done.set()

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(propose)
                    # The loop is free while the transaction waits for the lock: every
                    # other task is blocked, and this one runs.
                    await wait_all_tasks_blocked()
                    assert not done.is_set()
                    other.execute("ROLLBACK")
                    await done.wait()
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
            other.close()
        assert result == ["waited"]
        # ``fn`` ran once, on the worker thread; nothing was run on the loop first.
        assert len(calls) == 1 and calls[0] is not threading.current_thread()
        assert db.inline_transactions == 0
        assert await _names(db) == ["waited"]
        # And the next short transaction is back on the loop (the busy timeout restored).
        assert await db.transact(lambda s: s.connection().exec_driver_sql(
            "PRAGMA busy_timeout").scalar(), short=True) == 30000
        assert db.inline_transactions == 1
    finally:
        await db.dispose()


async def test_short_transactions_leave_wal_checkpoints_to_the_worker_thread(
    tmp_path: Path,
) -> None:
    # A WAL checkpoint (an fsync) never runs on the event loop: short transactions commit
    # with autocheckpoint off, and after INLINE_RUN of them in a row the next one goes to
    # the worker thread, whose commit checkpoints as SQLite's default would.
    db = Database(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    await db.create_schema()
    try:
        seen: list[tuple[bool, int]] = []

        def probe(s: Session) -> None:
            seen.append((threading.current_thread() is threading.main_thread(),
                         s.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()))

        for _ in range(INLINE_RUN + 1):
            await db.transact(probe, short=True)
        assert seen[:INLINE_RUN] == [(True, 0)] * INLINE_RUN
        assert seen[INLINE_RUN] == (False, 1000)
        assert db.inline_transactions == INLINE_RUN
        await db.transact(probe, short=True)  # a new run on the loop
        assert seen[-1] == (True, 0)
    finally:
        await db.dispose()
